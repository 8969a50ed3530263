// dyncreds console: copy buttons, expiry countdowns, policy templates, confirmations.
// Loaded from /static (the Content-Security-Policy allows no inline script).
"use strict";
(function () {
  function left(seconds) {
    if (seconds <= 0) return "expired";
    const h = Math.floor(seconds / 3600), m = Math.floor((seconds % 3600) / 60), s = seconds % 60;
    return "in " + (h ? h + "h " : "") + (h || m ? m + "m " : "") + s + "s";
  }
  function tick() {
    document.querySelectorAll("[data-expires]").forEach(function (el) {
      const at = Date.parse(el.dataset.expires);
      if (isNaN(at)) return;
      const text = left(Math.round((at - Date.now()) / 1000));
      el.textContent = text;
      el.title = el.dataset.expires;
    });
  }
  document.addEventListener("click", function (event) {
    const button = event.target.closest("button[data-copy]");
    if (!button) return;
    const source = document.getElementById(button.dataset.copy);
    if (!source || !navigator.clipboard) return;
    navigator.clipboard.writeText(source.textContent).then(function () {
      const label = button.textContent;
      button.textContent = "Copied";
      setTimeout(function () { button.textContent = label; }, 1500);
    });
  });
  document.addEventListener("change", function (event) {
    const select = event.target.closest("select[data-fill]");
    if (!select || !select.value) return;
    const box = document.getElementById(select.dataset.fill);
    if (box && (!box.value.trim() || confirm("Replace the policy in the box?"))) {
      box.value = JSON.stringify(JSON.parse(select.value), null, 2);
    }
    select.value = "";
  });
  document.addEventListener("submit", function (event) {
    const form = event.target.closest("form[data-confirm]");
    if (form && !confirm(form.dataset.confirm)) event.preventDefault();
  }, true);
  document.addEventListener("htmx:afterSwap", tick);
  // An in-page request refused (the session expired, or an error): show the answer.
  document.addEventListener("htmx:responseError", function (event) {
    const target = document.getElementById("generated");
    if (target) target.textContent = event.detail.xhr.responseText || "the request failed";
  });
  document.addEventListener("DOMContentLoaded", function () { tick(); setInterval(tick, 1000); });
})();
