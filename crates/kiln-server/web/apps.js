// "Your apps" on the landing page: this browser's apps (GET /api/apps),
// newest first, each a real link to its builder (`/a/<app id>`), so the
// keyboard, middle-click and "open in new tab" all work. Names are the
// owner's (or the first prompt's) text: inserted as text only.

const $ = (id) => document.getElementById(id);
const APP_ID = /^[0-9a-f]{32}$/;

const rtf = new Intl.RelativeTimeFormat("en", { numeric: "auto" });

/** "just now", "5 minutes ago", "yesterday", "on Mar 3" … for a time in ms. */
export function ago(ms, now = Date.now()) {
  if (!Number.isFinite(ms) || ms <= 0) return "at an unknown time";
  const s = Math.round((now - ms) / 1000);
  if (s < 45) return "just now";
  const m = Math.round(s / 60);
  if (m < 60) return rtf.format(-m, "minute");
  const h = Math.round(m / 60);
  if (h < 24) return rtf.format(-h, "hour");
  const d = Math.round(h / 24);
  if (d < 7) return rtf.format(-d, "day");
  const when = new Date(ms);
  const sameYear = when.getFullYear() === new Date(now).getFullYear();
  return `on ${when.toLocaleDateString("en", { month: "short", day: "numeric", year: sameYear ? undefined : "numeric" })}`;
}

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

/** Renders the list (hidden when there is none); `open(id)` is called on a plain click. */
export function renderApps(apps, open) {
  const list = $("apps-list");
  list.textContent = "";
  $("apps-error").hidden = true;
  const valid = (Array.isArray(apps) ? apps : []).filter((a) => a && typeof a.id === "string" && APP_ID.test(a.id));
  for (const a of valid) {
    const li = el("li");
    const link = el("a", "app-row");
    link.href = `/a/${a.id}`;
    link.dataset.appId = a.id;
    const running = a.running === true;
    const dot = el("span", running ? "app-dot running" : "app-dot");
    dot.title = running ? "The agent is working on it" : "Idle";
    const main = el("span", "app-main");
    const name = typeof a.name === "string" && a.name.trim() ? a.name : "Untitled app";
    main.append(el("span", "app-row-name", name));
    const meta = el("span", "app-meta");
    const time = el("time", "", `edited ${ago(Number(a.updatedAt))}`);
    time.dataset.ms = String(Number(a.updatedAt));
    if (Number.isFinite(Number(a.updatedAt)) && a.updatedAt > 0) {
      time.dateTime = new Date(Number(a.updatedAt)).toISOString();
      time.title = new Date(Number(a.updatedAt)).toLocaleString();
    }
    meta.append(time);
    if (running) meta.append(el("span", "app-working", " · working"));
    main.append(meta);
    link.append(dot, main, el("span", "app-go", "›"));
    link.lastChild.setAttribute("aria-hidden", "true");
    link.addEventListener("click", (e) => {
      if (e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return; // a new tab or window
      e.preventDefault();
      open(a.id);
    });
    li.append(link);
    list.append(li);
  }
  $("your-apps").hidden = valid.length === 0;
  // A returning person's landing: their apps right under the prompt (the
  // example prompts are for a first visit).
  $("landing").classList.toggle("has-apps", valid.length > 0);
}

/** The list could not be loaded: said in words (no heading over nothing). */
export function appsError(message) {
  $("apps-list").textContent = "";
  $("apps-error").textContent = `Your apps could not be listed: ${message}`;
  $("apps-error").hidden = false;
  $("your-apps").hidden = false;
}

/** Keeps the "edited … ago" texts current. */
export function refreshTimes() {
  for (const t of document.querySelectorAll("#apps-list time[data-ms]")) {
    t.textContent = `edited ${ago(Number(t.dataset.ms))}`;
  }
}
