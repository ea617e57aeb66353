/* Bulk upload: send the file with a progress bar, then follow the import's progress (read from
 * the server, so it works with several web processes). No inline script: the CSP forbids it. */
(function () {
  'use strict';

  function bar(root) {
    var box = root.querySelector('#bulk-progress') || document.getElementById('bulk-progress');
    var label = root.querySelector('#bulk-progress-label') || document.getElementById('bulk-progress-label');
    if (box) { box.classList.remove('d-none'); }
    return function (percent, text) {
      if (box) {
        var inner = box.querySelector('.progress-bar');
        inner.style.width = (percent === null || percent === undefined ? 100 : Math.max(2, percent)) + '%';
        inner.textContent = percent === null || percent === undefined ? '' : percent + '%';
      }
      if (label && text) { label.textContent = text; }
    };
  }

  function poll(url, show, onFinished) {
    var stopped = false;
    function tick() {
      if (stopped) { return; }
      fetch(url, {credentials: 'same-origin', headers: {'Accept': 'application/json'}})
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (info) {
          if (!info) { return; }
          show(info.percent, info.label + (info.percent !== null && info.percent !== undefined ? ' ' + info.percent + '%' : '…'));
          if (onFinished && info.state && ['queued', 'running', 'uploading'].indexOf(info.state) < 0) {
            stopped = true;
            onFinished(info);
          }
        })
        .catch(function () { /* the next tick tries again */ })
        .then(function () { if (!stopped) { window.setTimeout(tick, 1000); } });
    }
    tick();
    return function () { stopped = true; };
  }

  // The page's words, translated by the server (data-msg-* attributes of the form).
  function msg(form, name, fallback) {
    return form.getAttribute('data-msg-' + name) || fallback;
  }

  // Forms that start a job: sent in the background so the page can show the progress.
  function sendWithProgress(form) {
    form.addEventListener('submit', function (event) {
      if (!window.XMLHttpRequest || !window.FormData) { return; }
      event.preventDefault();
      var show = bar(form);
      var button = form.querySelector('button[type=submit]');
      if (button) { button.disabled = true; }
      var stop = null;
      var xhr = new XMLHttpRequest();
      xhr.open('POST', form.action);
      if (xhr.upload && form.enctype === 'multipart/form-data') {
        xhr.upload.addEventListener('progress', function (e) {
          if (e.lengthComputable) { show(Math.round(100 * e.loaded / e.total), msg(form, 'uploading', 'Uploading') + ' ' + Math.round(100 * e.loaded / e.total) + '%'); }
        });
        xhr.upload.addEventListener('load', function () {
          stop = poll(form.getAttribute('data-progress-url'), show, null);
        });
      } else {
        stop = poll(form.getAttribute('data-progress-url'), show, null);
      }
      xhr.addEventListener('load', function () {
        if (stop) { stop(); }
        if (xhr.status === 413) {
          if (button) { button.disabled = false; }
          show(null, msg(form, 'too-large', 'The file is larger than the upload limit: nothing was read.'));
          return;
        }
        window.location.assign(xhr.responseURL || window.location.href);
      });
      xhr.addEventListener('error', function () {
        if (stop) { stop(); }
        if (button) { button.disabled = false; }
        show(null, msg(form, 'lost', 'The connection was lost; try again.'));
      });
      xhr.send(new FormData(form));
    });
  }

  ['bulk-upload-form', 'bulk-confirm-form'].forEach(function (id) {
    var form = document.getElementById(id);
    if (form) { sendWithProgress(form); }
  });

  // A job that runs on a worker: follow it, and show the result when it ends.
  var status = document.getElementById('bulk-status');
  if (status) {
    poll(status.getAttribute('data-progress-url'), bar(status), function () { window.location.reload(); });
  }
}());
