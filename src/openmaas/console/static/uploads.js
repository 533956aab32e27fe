/* OpenMaaS console, files: the upload form sent by XHR so its progress shows; without JavaScript
   the same form posts itself and the server redirects. No framework. */
(function () {
  "use strict";

  var form = document.querySelector("form[data-file-upload]");
  if (!form) return;
  var failure = form.querySelector("[data-upload-error]");
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
    window.openmaasSendUpload(form, xhr, new FormData(form), show);
  });
})();
