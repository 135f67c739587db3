"use strict";
// Copy buttons on the one-time secret page: <button data-copy-target="element-id">.
(function () {
  function fallbackCopy(node) {
    const range = document.createRange();
    range.selectNodeContents(node);
    const selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
    const ok = document.execCommand("copy");
    selection.removeAllRanges();
    return ok ? Promise.resolve() : Promise.reject(new Error("copy failed"));
  }

  function copy(node) {
    const text = node.textContent.trim();
    if (navigator.clipboard && window.isSecureContext) {
      return navigator.clipboard.writeText(text).catch(function () {
        return fallbackCopy(node);
      });
    }
    return fallbackCopy(node);
  }

  document.addEventListener("click", function (event) {
    const button = event.target.closest("[data-copy-target]");
    if (!button) {
      return;
    }
    const node = document.getElementById(button.dataset.copyTarget);
    const status = document.getElementById(button.dataset.copyTarget + "-status");
    copy(node).then(
      function () {
        if (status) { status.textContent = "Copied."; }
      },
      function () {
        if (status) { status.textContent = "Select the text and copy it by hand."; }
      }
    );
  });
})();
