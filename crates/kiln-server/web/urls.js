// The one gate for every address the builder navigates to: the live and
// standby preview frames, the quick frame, the Open and Share buttons and a
// version's Open button all ask `checkUrl` first.
//
// Why a gate: those addresses arrive in chat events, and an event is only as
// trustworthy as the sandbox behind it (a compromised envd once sent
// `previewUrl: "javascript:…"`, which became an iframe's src and ran in
// Kiln's origin). The page's CSP (no inline script, Trusted Types) stops
// such a script from running; this gate stops the navigation before the CSP
// has to, and says so in the transcript.
//
// What passes, parsed with the URL parser (never by string prefix):
// - a sandbox preview: http(s), no user or password, host exactly
//   `<32 lowercase hex>.<preview domain>` (any port); the preview domain
//   comes from `/api/config`;
// - a quick app: http(s) on Kiln's own origin or its public URL's
//   (`/api/config`), path `/q/<32 hex>` or `/q/<32 hex>/<version>` with no
//   query, or the quick frame's shell document (`?g=<generation>` at most); never a
//   fragment. Frames load
//   it from this page's own origin (`frameHref`): the CSP's `frame-src
//   'self'` and the shell's postMessage handshake both rely on that.
// Everything else throws `RefusedUrl` (with the reason, shown as text).

/** The quick frame's shell: Kiln serves it with the quick-app CSP (web.rs). */
export const QUICK_SHELL_PATH = "/assets/quick-frame.html";

const SANDBOX_ID = /^[0-9a-f]{32}$/;
const QUICK_PATH = /^\/q\/[0-9a-f]{32}(\/[0-9a-f]{4,40})?$/;
const SHELL_QUERY = /^(\?g=[0-9a-f]{12}-[0-9]{1,9})?$/;

let rules = null;

export class RefusedUrl extends Error {
  constructor(raw, why) {
    const shown = typeof raw === "string" ? raw : JSON.stringify(raw) ?? String(raw);
    super(`Refused to open ${JSON.stringify(shown.length > 200 ? `${shown.slice(0, 200)}…` : shown)}: ${why}`);
    this.name = "RefusedUrl";
    this.raw = shown;
  }
}

/**
 * Sets what passes, from `/api/config` (`previewDomain`, `publicUrl`).
 * Until this is called every address is refused: failing closed.
 */
export function allowUrls({ previewDomain, publicUrl }, origin = location.origin) {
  const domain = typeof previewDomain === "string" ? previewDomain.toLowerCase() : "";
  let publicOrigin = null;
  try {
    const p = new URL(publicUrl);
    if (p.protocol === "http:" || p.protocol === "https:") publicOrigin = p.origin;
  } catch {
    /* no public URL: only this page's origin serves quick apps */
  }
  rules = { domain, origins: new Set([origin, publicOrigin].filter(Boolean)), own: origin };
}

/**
 * Checks `raw` and returns `{kind, href, frameHref}`; `kind` is "preview" or
 * "quick". With `want`, only that kind passes. Throws `RefusedUrl`.
 */
export function checkUrl(raw, want) {
  if (!rules) throw new RefusedUrl(raw, "the server's settings (/api/config) are not loaded yet");
  if (typeof raw !== "string" || raw.length > 2048) throw new RefusedUrl(raw, "not an address");
  let u;
  try {
    u = new URL(raw);
  } catch {
    throw new RefusedUrl(raw, "not an absolute address");
  }
  if (u.protocol !== "http:" && u.protocol !== "https:") throw new RefusedUrl(raw, "only http and https addresses are opened");
  if (u.username || u.password) throw new RefusedUrl(raw, "addresses with a user name or password are not opened");
  const dot = u.hostname.indexOf(".");
  const label = u.hostname.slice(0, dot);
  const isPreview = dot > 0 && rules.domain !== "" && u.hostname.slice(dot + 1) === rules.domain && SANDBOX_ID.test(label);
  const isQuick =
    rules.origins.has(u.origin) &&
    !u.hash &&
    ((QUICK_PATH.test(u.pathname) && !u.search) || (u.pathname === QUICK_SHELL_PATH && SHELL_QUERY.test(u.search)));
  const kind = isPreview ? "preview" : isQuick ? "quick" : null;
  if (!kind) {
    throw new RefusedUrl(raw, `not a sandbox preview (<id>.${rules.domain || "?"}) or a quick app of this Kiln`);
  }
  if (want && kind !== want) throw new RefusedUrl(raw, `a ${kind} address where a ${want} address belongs`);
  const href = u.href;
  return { kind, href, frameHref: kind === "quick" ? rules.own + u.pathname + u.search : href };
}

/**
 * Points `frame` at `raw` if it passes the gate (see `checkUrl`), and
 * returns the frame that now shows it: use that one from then on. A frame
 * that has shown something is swapped for a fresh copy instead of being
 * navigated again, because every later navigation of a frame adds an entry
 * to the page's history — the back button would step through old previews
 * instead of leaving the app. (A fresh frame's first load adds none.)
 */
export function navigateFrame(frame, raw, want) {
  const { frameHref } = checkUrl(raw, want);
  const f = frame.getAttribute("src") === null ? frame : blankFrame(frame);
  f.src = frameHref;
  if (f !== frame) frame.replaceWith(f);
  return f;
}

/** A copy of `frame` (id, classes, sandbox, title) that shows nothing, not yet in the page. */
export function blankFrame(frame) {
  const f = frame.cloneNode(false);
  f.removeAttribute("src");
  return f;
}

/** Swaps `frame` for an empty copy (no navigation, no history entry); returns the copy. */
export function clearFrame(frame) {
  if (frame.getAttribute("src") === null) return frame;
  const f = blankFrame(frame);
  frame.replaceWith(f);
  return f;
}

/** Opens `raw` in a new tab if it passes the gate (no opener, no referrer). */
export function openTab(raw) {
  const { href } = checkUrl(raw);
  window.open(href, "_blank", "noopener,noreferrer");
}
