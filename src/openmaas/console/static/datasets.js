/* OpenMaaS console, datasets: the upload sent with its progress shown, and a version's page
   refreshed when its validation ends. No framework. */
(function () {
  "use strict";

  var form = document.querySelector("form[data-upload]");
  if (form) {
    var failure = form.querySelector("[data-upload-error]");
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var file = form.querySelector("input[type=file]").files[0];
      if (!file) return;
      var query = new URLSearchParams({ name: form.elements.name.value.trim(), filename: file.name });
      if (form.elements.target.value.trim()) query.set("target", form.elements.target.value.trim());
      var xhr = new XMLHttpRequest();
      xhr.open("POST", form.getAttribute("data-upload-url") + "?" + query.toString());
      xhr.setRequestHeader("Content-Type", "application/octet-stream");
      xhr.setRequestHeader("X-CSRF-Token", form.getAttribute("data-csrf"));
      failure.hidden = true;
      window.openmaasSendUpload(form, xhr, file, function (error) {
        failure.textContent = error.message + (error.param ? " (field: " + error.param + ")" : "");
        failure.hidden = false;
      });
    });
  }

  // While a version is validated, its page asks for its status every second and reloads once.
  var status = document.querySelector("[data-dataset-status=validating]");
  if (status) {
    var poll = function () {
      fetch(status.getAttribute("data-status-url"), { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (response) { return response.ok ? response.json() : null; })
        .then(function (body) {
          if (!body) return;  // signed out or gone: stop
          if (body.status !== "validating") { window.location.reload(); return; }
          window.setTimeout(poll, 1000);
        });
    };
    window.setTimeout(poll, 1000);
  }
})();
