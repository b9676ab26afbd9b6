// Progressive enhancement only: every page works without this file.
(function () {
  "use strict";
  // Copy buttons beside ids: shown only where the clipboard can be used.
  if (navigator.clipboard) {
    document.querySelectorAll("button.copy[data-copy]").forEach(function (button) {
      button.hidden = false;
      button.addEventListener("click", function () {
        navigator.clipboard.writeText(button.dataset.copy).then(function () {
          var before = button.textContent;
          button.textContent = "copied";
          setTimeout(function () { button.textContent = before; }, 1200);
        });
      });
    });
  }
})();
