/* OpenMaaS console, datasets: the upload sent with its progress shown, and a version's page
   refreshed when its validation ends. No framework. */
(function () {
  "use strict";

  var form = document.querySelector("form[data-upload]");
  if (form) {
    var bar = form.querySelector("progress");
    var box = form.querySelector("[data-upload-progress]");
    var note = form.querySelector("[data-upload-note]");
    var failure = form.querySelector("[data-upload-error]");
    var button = form.querySelector("button[type=submit]");
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
      box.hidden = false;
      bar.value = 0;
      note.textContent = "0%";
      button.disabled = true;
      xhr.upload.addEventListener("progress", function (progress) {
        if (!progress.lengthComputable) return;
        var percent = Math.round((100 * progress.loaded) / progress.total);
        bar.value = percent;
        bar.setAttribute("data-percent", String(percent));
        note.textContent = percent + "% of " + progress.total + " bytes";
      });
      xhr.upload.addEventListener("load", function () { note.textContent = "Checking the file…"; });
      xhr.addEventListener("load", function () {
        var body = null;
        try { body = JSON.parse(xhr.responseText); } catch (e) { body = null; }
        if (xhr.status < 300 && body && body.url) {
          bar.value = 100;
          note.textContent = body.created ? "Uploaded." : "These bytes were uploaded before: opening that version.";
          window.location.assign(body.url);
          return;
        }
        var error = body && body.error;
        failure.textContent = error ? error.message + (error.param ? " (field: " + error.param + ")" : "") : "The upload failed (" + xhr.status + ").";
        failure.hidden = false;
        box.hidden = true;
        button.disabled = false;
      });
      xhr.addEventListener("error", function () {
        failure.textContent = "The upload was interrupted: nothing was kept. Try again.";
        failure.hidden = false;
        box.hidden = true;
        button.disabled = false;
      });
      xhr.send(file);
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
