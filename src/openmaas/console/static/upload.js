/* OpenMaaS console: an upload sent by XHR with its progress shown in its form's
   [data-upload-progress] box (a <progress> and a [data-upload-note]); a success opens the answer's
   `url`, a refusal or a broken connection goes to `failed` (the API's error shape). Used by the
   datasets and files pages. No framework. */
window.openmaasSendUpload = function (form, xhr, payload, failed) {
  "use strict";
  var bar = form.querySelector("progress");
  var box = form.querySelector("[data-upload-progress]");
  var note = form.querySelector("[data-upload-note]");
  var button = form.querySelector("button[type=submit]");
  var fail = function (error) {
    failed(error);
    box.hidden = true;
    button.disabled = false;
  };
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
      note.textContent = body.created === false ? "These bytes were uploaded before: opening that version." : "Uploaded.";
      window.location.assign(body.url);
      return;
    }
    fail(body && body.error ? body.error : { message: "The upload failed (" + xhr.status + ")." });
  });
  xhr.addEventListener("error", function () {
    fail({ message: "The upload was interrupted: nothing was kept. Try again." });
  });
  xhr.send(payload);
};
