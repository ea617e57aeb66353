/* Back-office behaviour bound from data attributes, so that no page needs an inline event
 * handler or a javascript: URL (the Content-Security-Policy allows neither). */
(function () {
  'use strict';

  // Links that exist only as click targets (href="javascript:void(0)" in Flask-Admin's
  // templates): cancel their navigation before it happens, their own handlers still run.
  document.addEventListener('click', function (event) {
    var link = event.target.closest && event.target.closest('a[href^="javascript:"], a[href="#"]');
    if (link) {
      event.preventDefault();
    }
  }, true);

  document.addEventListener('click', function (event) {
    var target = event.target.closest ? event.target.closest('[data-confirm]') : null;
    if (target && !window.confirm(target.getAttribute('data-confirm'))) {
      event.preventDefault();
      event.stopImmediatePropagation();
    }
  });

  document.addEventListener('click', function (event) {
    if (!event.target.closest) { return; }
    var add = event.target.closest('[data-inline-add]');
    if (add && window.faForm) {
      event.preventDefault();
      window.faForm.addInlineField(add, add.getAttribute('data-inline-add'));
      return;
    }
    var action = event.target.closest('[data-model-action]');
    if (action && window.modelActions) {
      event.preventDefault();
      window.modelActions.execute(action.getAttribute('data-model-action'));
    }
  });

  // "Print" buttons (the patient chart's summary has a print stylesheet).
  document.addEventListener('click', function (event) {
    var button = event.target.closest ? event.target.closest('[data-print]') : null;
    if (button) {
      event.preventDefault();
      window.print();
    }
  });

  // Elements that submit their form when changed (language switcher, page size ...).
  document.addEventListener('change', function (event) {
    var el = event.target;
    if (el && el.hasAttribute && el.hasAttribute('data-autosubmit') && el.form) {
      el.form.submit();
    }
  });
})();
