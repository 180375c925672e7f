// Live updates: listen to the tenant's events and, when one concerns the
// visible section (its data-live prefixes, and data-subject if set), fetch
// this page again and swap that section in. No framework, no build step.
const section = document.getElementById("live");
const prefixes = (section?.dataset.live || "").split(/\s+/).filter(Boolean);
const subject = section?.dataset.subject || "";
const QUIET_MS = 400;
let timer = null;

function concerns(event) {
  if (!prefixes.some((p) => event.type.startsWith(p))) return false;
  if (!subject) return true;
  return JSON.stringify(event).includes(subject);
}

async function refresh() {
  timer = null;
  // A half-typed form is not thrown away.
  if (section.contains(document.activeElement) && document.activeElement.matches("input, textarea, select")) return;
  const response = await fetch(location.href, { headers: { Accept: "text/html" }, credentials: "same-origin" });
  if (response.redirected || !response.ok) return;
  const page = new DOMParser().parseFromString(await response.text(), "text/html");
  const fresh = page.getElementById("live");
  if (fresh) {
    section.innerHTML = fresh.innerHTML;
    document.body.dataset.refreshed = String(Number(document.body.dataset.refreshed || 0) + 1);
  }
}

if (section && prefixes.length && "EventSource" in window) {
  const source = new EventSource("/live/events");
  source.onmessage = (message) => {
    let event;
    try { event = JSON.parse(message.data); } catch { return; }
    if (concerns(event) && timer === null) timer = setTimeout(refresh, QUIET_MS);
  };
  source.addEventListener("open", () => { document.body.dataset.live = "open"; });
  window.addEventListener("pagehide", () => source.close());
}
