/* OpenMaaS console, files: the upload form sent by XHR so its progress shows; without JavaScript
   the same form posts itself and the server redirects. No framework. */
(function () {
  "use strict";

  var form = document.querySelector("form[data-file-upload]");
  if (!form) return;
  var bar = form.querySelector("progress");
  var box = form.querySelector("[data-upload-progress]");
  var note = form.querySelector("[data-upload-note]");
  var failure = form.querySelector("[data-upload-error]");
  var button = form.querySelector("button[type=submit]");
  // The API's error in the page: its message, its field, and each located problem.
  var show = function (error) {
    failure.textContent = "";
    var alert = document.createElement("div");
    alert.className = "alert error";
    alert.setAttribute("role", "alert");
    var strong = document.createElement("strong");
    strong.textContent = error.message;
    alert.appendChild(strong);
    if (error.param) {
      var field = document.createElement("span");
      field.className = "meta";
      field.textContent = " Field: " + error.param;
      alert.appendChild(field);
    }
    failure.appendChild(alert);
    if (error.issues && error.issues.length) {
      var table = document.createElement("table");
      table.className = "compact";
      table.setAttribute("data-issues", "");
      var caption = table.createCaption();
      caption.textContent = "Problems found, by line";
      var head = table.createTHead().insertRow();
      ["Line", "Problem", "Code"].forEach(function (label) {
        var th = document.createElement("th");
        th.scope = "col";
        th.textContent = label;
        head.appendChild(th);
      });
      var body = table.createTBody();
      error.issues.forEach(function (issue) {
        var row = body.insertRow();
        row.insertCell().textContent = issue.line || "—";
        row.insertCell().textContent = issue.message;
        row.insertCell().textContent = issue.code;
      });
      var wrap = document.createElement("div");
      wrap.className = "table-wrap";
      wrap.appendChild(table);
      failure.appendChild(wrap);
    }
    failure.hidden = false;
  };
  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var xhr = new XMLHttpRequest();
    xhr.open("POST", form.getAttribute("action"));
    xhr.setRequestHeader("Accept", "application/json");
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
        window.location.assign(body.url);
        return;
      }
      show(body && body.error ? body.error : { message: "The upload failed (" + xhr.status + ")." });
      box.hidden = true;
      button.disabled = false;
    });
    xhr.addEventListener("error", function () {
      show({ message: "The upload was interrupted: nothing was kept. Try again." });
      box.hidden = true;
      button.disabled = false;
    });
    xhr.send(new FormData(form));
  });
})();
