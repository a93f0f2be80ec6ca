// yichuang operations console: the only script. Live parts (an element with data-live="<url>")
// are replaced by the server's fragment at that URL every data-every milliseconds; the
// "select all" box of a dead-letter list ticks every box. No other behaviour.
"use strict";
for (const el of document.querySelectorAll("[data-live]")) {
  const every = Number(el.dataset.every) || 5000;
  const tick = async () => {
    try {
      const r = await fetch(el.dataset.live, { credentials: "same-origin", cache: "no-store" });
      if (r.redirected || r.status === 401 || r.status === 403) {
        // Signed out or refused meanwhile: the whole page is asked for again (the sign-in, or
        // the refusal), not left showing what it showed last.
        location.reload();
        return;
      }
      if (r.ok) {
        el.innerHTML = await r.text();
        el.dataset.updated = String(Date.now());
      }
    } catch (_) {
      // The next tick tries again.
    }
    setTimeout(tick, every);
  };
  setTimeout(tick, every);
}
const all = document.getElementById("select-all");
if (all) {
  all.addEventListener("change", () => {
    for (const box of document.querySelectorAll('#letters input[name="id"]')) box.checked = all.checked;
  });
}
