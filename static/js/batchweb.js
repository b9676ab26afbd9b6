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

// Metadata rows on the create form: show the filled rows and one empty row, plus a button for
// more. Without JavaScript every row is shown.
(function () {
  "use strict";
  var box = document.querySelector("[data-kv-rows]");
  if (!box) return;
  var rows = Array.prototype.slice.call(box.querySelectorAll("[data-kv-row]"));
  var filled = function (row) {
    return Array.prototype.some.call(row.querySelectorAll("input"), function (i) { return i.value; });
  };
  var shown = 0;
  rows.forEach(function (row, i) {
    if (filled(row) || i < 2) { shown = i + 1; }
  });
  rows.forEach(function (row, i) { row.hidden = i >= shown; });
  var button = document.createElement("button");
  button.type = "button";
  button.textContent = "Add metadata";
  button.className = "small";
  button.addEventListener("click", function () {
    var next = rows.filter(function (r) { return r.hidden; })[0];
    if (next) { next.hidden = false; next.querySelector("input").focus(); }
    if (!rows.some(function (r) { return r.hidden; })) { button.hidden = true; }
  });
  box.parentNode.appendChild(button);
})();
