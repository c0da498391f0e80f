// Kiln's builder UI. Two places, one page:
// - `/`: the landing — a prompt, a mode, and "Your apps" (GET /api/apps);
// - `/a/<app id>`: the builder — the app's whole conversation beside its live
//   preview, versions, share, rename and cancel.
// Moving between them is history.pushState (the back button works); a
// reload at `/a/<id>` rebuilds the page from GET /api/apps/<id>: its stored
// events go through the same handler as the live stream's, so every turn
// shows, and a running turn is followed on (/events?after=<seq>).
// Talks only to Kiln's HTTP API (docs/openapi.json) through api.js, which
// adds the owner key in a header: the key is never part of a URL.
//
// Events are untrusted input: what a sandbox's agent says reaches this page
// through them. So every address from an event (or from the API) passes the
// gate in urls.js before anything navigates to it or copies it, text is
// only ever inserted as text (chat.js, apps.js), and a malformed event is
// skipped without stopping the stream. The page runs under a CSP with no
// inline script and Trusted Types required (web.rs), so no HTML sink is used.

import { api, errorMessage, getJson, ownerKey } from "./api.js";
import { appsError, refreshTimes, renderApps } from "./apps.js";
import { Transcript } from "./chat.js";
import { Preview } from "./preview.js";
import { chat, follow } from "./stream.js";
import { RefusedUrl, allowUrls, checkUrl, openTab } from "./urls.js";

const $ = (id) => document.getElementById(id);
const APP_ID = /^[0-9a-f]{32}$/;
const APP_PATH = /^\/a\/([^/]*)\/?$/;
const TITLE = document.title;

ownerKey(); // created on the first visit

const state = {
  config: null,
  /** Prompts of this app ask for the demo replay (set by "Try the demo" or a demo app's events). */
  demo: false,
  running: false,
  mode: "vm",
  shareUrl: null,
  versions: [],
  /** The app on screen (null on the landing, and while a first prompt has no app yet). */
  appId: null,
  /** Its last GET /api/apps/<id> answer (name, quick app, sandbox). */
  app: null,
  /** Events are a log this page did not start (a reopened app, a followed turn). */
  replaying: false,
  /** While the stored conversation is replayed: what the preview needs afterwards. */
  snapshot: null,
  startLine: null,
};
const preview = new Preview();
const transcript = new Transcript();
window.kiln = { state, preview }; // for tests and the curious

/**
 * What is on screen: every navigation starts a new view, whose controller
 * aborts the previous view's requests and streams; an answer or event that
 * arrives for an older view is dropped.
 */
let view = { abort: new AbortController() };
function newView() {
  view.abort.abort();
  view = { abort: new AbortController() };
  return view;
}

function toast(text, ms = 2200) {
  const t = $("toast");
  t.textContent = text;
  t.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => (t.hidden = true), ms);
}

function status(text, kind = "") {
  $("status-text").textContent = text;
  $("status").className = `status ${kind}`;
}

function fmtMs(ms) {
  return ms >= 1000 ? `${(ms / 1000).toFixed(1)} s` : `${ms} ms`;
}

function setRunning(on) {
  state.running = on;
  $("cancel").hidden = !on;
  $("send").disabled = on;
  $("landing-send").disabled = on;
}

function show(which) {
  for (const id of ["landing", "builder", "missing"]) $(id).hidden = id !== which;
  $("new-app").hidden = which === "landing";
  if (which === "builder" && !$("builder").dataset.tab) $("builder").dataset.tab = "chat";
}

function modelBadge(model) {
  const b = $("model-badge");
  if (typeof model !== "string" || !model) {
    b.hidden = true;
    return;
  }
  b.hidden = false;
  b.textContent = model === "demo" ? "Demo replay" : model.startsWith("scripted:") ? "Scripted replay" : model;
  b.title = model;
  b.classList.toggle("demo", model === "demo");
}

/** The badge and the no-model notice for what the server has (and this app uses). */
function configBadge() {
  const c = state.config;
  if (!c) return;
  if (c.model) modelBadge(c.model);
  else modelBadge(state.demo ? "demo" : null);
  $("no-model").hidden = !!c.model || state.demo;
}

/** An address the gate refused: said in the chat (as text), nothing opened. */
function refused(e, where = "") {
  transcript.error(where ? `${where}: ${e.message}` : e.message);
}

/**
 * One chat event: what the stream reader (stream.js) calls for every event,
 * live or replayed. Exported so the browser tests can feed it events a
 * compromised sandbox might send.
 */
export function onEvent(ev) {
  if (!ev || typeof ev !== "object") return;
  try {
    handle(ev);
  } catch (e) {
    if (e instanceof RefusedUrl) refused(e);
    else console.error("a chat event could not be shown", ev, e);
  }
}

function handle(ev) {
  const snap = state.snapshot;
  switch (ev.type) {
    case "session":
      transcript.turn();
      // Live turns show the prompt when it is sent; a replayed log shows it here.
      if (state.replaying) {
        transcript.user(String(ev.prompt ?? ""));
        setRunning(true); // until this turn's done (if the log has it yet)
      }
      state.mode = ev.mode === "quick" ? "quick" : "vm";
      state.shareUrl = null;
      if (ev.model === "demo" && !state.config?.model) {
        state.demo = true; // a demo app: its next prompt continues the replay
        $("no-model").hidden = true;
      }
      if (ev.model) modelBadge(ev.model);
      if (state.mode === "vm") {
        state.startLine = ev.warm
          ? `Warm start · sandbox ready in ${fmtMs(Number(ev.claimMs) || 0)}`
          : `Cold start · sandbox booted in ${fmtMs(Number(ev.bootMs) || 0)}`;
      }
      if (snap) {
        // The preview is set once, from the app's state, after the replay.
        snap.last = ev;
        snap.html = "";
        break;
      }
      preview.mark("session");
      if (state.mode === "quick") {
        preview.quickStart(ev.previewUrl); // throws RefusedUrl: nothing shown
        state.shareUrl = checkUrl(ev.previewUrl, "quick").href;
        status("Quick mode · writing one HTML file", "busy");
      } else {
        try {
          preview.show(ev.previewUrl);
        } catch (e) {
          preview.idle("The preview's address was refused (see the chat).");
          throw e;
        }
        state.shareUrl = checkUrl(ev.previewUrl, "preview").href;
        status(`${state.startLine} · agent working…`, "busy");
      }
      break;
    case "boot":
      if (snap) break;
      status(`Starting a sandbox: ${String(ev.phase).replace("_", " ")} (${fmtMs(Number(ev.ms) || 0)})`, "busy");
      preview.waitingFor(ev.phase === "restore" ? "Restoring your app…" : "Starting a sandbox…");
      break;
    case "text":
      transcript.text(ev.delta);
      break;
    case "thought":
      transcript.thinking(ev.delta);
      break;
    case "tool_call":
      transcript.tool(ev);
      break;
    case "file":
      if (state.mode === "vm" && !snap) preview.fileChanged();
      break;
    case "html":
      if (snap) snap.html += typeof ev.delta === "string" ? ev.delta : "";
      else preview.quickDelta(ev.delta);
      break;
    case "version":
      transcript.version(ev);
      if (!snap) refreshApp();
      break;
    case "error":
      transcript.error(
        /no more turns/.test(ev.message)
          ? "The recorded replay has no more steps. Configure a model (see the notice at the top) to keep building your own ideas."
          : String(ev.message ?? "Something went wrong."),
      );
      if (ev.code === "no_model" && !state.replaying) $("no-model").hidden = false;
      break;
    case "done":
      setRunning(false);
      if (snap) break;
      if (state.mode === "quick") preview.quickDone();
      if (ev.stopReason === "cancelled") {
        transcript.system("Stopped.");
        status("Stopped", "");
      } else if (ev.stopReason === "error") {
        status("The last turn ended with an error", "bad");
      } else {
        status(state.mode === "quick" ? "Quick app ready" : `${state.startLine || "Sandbox running"} · ready`, "ok");
      }
      break;
    default:
      break;
  }
}

/** Drops events already shown (by `seq`) before handing them on. */
function deduped(after, v) {
  let last = after;
  const f = (ev) => {
    if (v !== view || !ev || typeof ev !== "object") return;
    if (typeof ev.seq === "number") {
      if (ev.seq <= last) return;
      last = ev.seq;
    }
    onEvent(ev);
  };
  f.last = () => last;
  return f;
}

async function send(prompt, mode) {
  if (state.running || !prompt.trim()) return;
  const v = view;
  preview.mark("send");
  show("builder");
  transcript.turn();
  transcript.user(prompt);
  setRunning(true);
  status(mode === "quick" ? "Asking for one HTML file…" : "Getting your sandbox…", "busy");
  if (mode === "vm" && !preview.url) preview.waitingFor("Getting a sandbox…");
  try {
    await configured; // the URL gate needs the preview domain
    const body = { prompt, mode, demo: state.demo };
    if (state.appId) body.appId = state.appId;
    const r = await chat(
      body,
      (ev) => {
        if (v !== view) return;
        // A new app: its first event names it, and the address becomes its own.
        if (ev.type === "session" && !state.appId && APP_ID.test(ev.appId)) adopt(ev.appId);
        onEvent(ev);
      },
      v.abort.signal,
    );
    if (v === view && !r.done && !v.abort.signal.aborted) {
      transcript.error(
        r.appId
          ? "The connection to Kiln was lost before this turn ended. The turn may still be running: reload the page to see where it got to."
          : "The connection to Kiln was lost before the app was created. Check Your apps on the start page.",
      );
      status("Connection lost", "bad");
    }
  } catch (e) {
    if (v !== view) return;
    transcript.error(e.message);
    status("Not sent", "bad");
  } finally {
    if (v === view && state.running) setRunning(false);
  }
}

/** The first prompt created app `id`: this page is now its builder. */
function adopt(id) {
  state.appId = id;
  history.replaceState(null, "", `/a/${id}`);
  refreshApp();
}

function selectedMode(name) {
  return document.querySelector(`input[name=${name}]:checked`).value;
}

function setMode(mode) {
  for (const n of ["mode", "mode2"]) {
    const r = document.querySelector(`input[name=${n}][value=${mode}]`);
    if (r) r.checked = true;
  }
  $("mode-hint").textContent =
    mode === "quick" ? "One self-contained HTML file, in seconds" : "Vite + React + TypeScript + Tailwind, with hot reload";
}

/** Reads the app again (name, versions, quick app) after it changed. */
async function refreshApp() {
  const id = state.appId;
  const v = view;
  if (!id) return null;
  let app;
  try {
    app = await getJson(`/api/apps/${id}`, { signal: v.abort.signal });
  } catch {
    return null;
  }
  if (v !== view || state.appId !== id) return null;
  setApp(app);
  return app;
}

function setApp(app) {
  state.app = app;
  showName(typeof app.name === "string" ? app.name : "");
  const quick = state.mode === "quick" && app.quick;
  state.versions = (quick ? app.quick.versions : app.versions) || [];
  renderVersions();
}

function renderVersions() {
  const list = $("versions-list");
  list.textContent = "";
  const quick = state.mode === "quick";
  const quickId = state.app?.quick?.id;
  $("versions-count").textContent = String(state.versions.length);
  state.versions.forEach((v, i) => {
    const li = document.createElement("li");
    if (i === 0) li.className = "current";
    const what = document.createElement("div");
    what.className = "what";
    const m = document.createElement("div");
    m.className = "msgline";
    m.textContent = String(v.message ?? "");
    m.title = m.textContent;
    const meta = document.createElement("div");
    meta.className = "meta";
    meta.textContent = `${String(v.sha).slice(0, 7)} · ${new Date(v.time * 1000).toLocaleTimeString()}`;
    what.append(m, meta);
    li.append(what);
    if (i > 0) {
      const b = document.createElement("button");
      b.className = "ghost";
      if (quick) {
        b.textContent = "Open";
        b.onclick = () => {
          try {
            openTab(`${location.origin}/q/${quickId}/${v.sha}`);
          } catch (e) {
            refused(e);
          }
        };
      } else {
        b.textContent = "Restore";
        b.onclick = () => restore(v.sha);
      }
      li.append(b);
    }
    list.append(li);
  });
}

async function restore(sha) {
  if (state.running) return toast("Wait for the agent to finish first");
  const id = state.appId;
  const v = view;
  if (!id) return;
  closeVersions();
  setRunning(true);
  status(`Restoring ${sha.slice(0, 7)}…`, "busy");
  try {
    const r = await api(`/api/apps/${id}/versions/${encodeURIComponent(sha)}/restore`, { method: "POST", signal: v.abort.signal });
    if (!r.ok) throw new Error(await errorMessage(r));
    const j = await r.json();
    if (v !== view) return;
    if (j.previewUrl) {
      preview.show(j.previewUrl); // throws RefusedUrl: reported below
      state.shareUrl = checkUrl(j.previewUrl, "preview").href;
    }
    preview.fileChanged();
    transcript.system(`Restored version ${sha.slice(0, 7)}.`);
    status(`Restored ${sha.slice(0, 7)}`, "ok");
    await refreshApp();
  } catch (e) {
    if (v !== view) return;
    transcript.error(`Restore failed: ${e.message}`);
    status("Restore failed", "bad");
  } finally {
    if (v === view) setRunning(false);
  }
}

function closeVersions() {
  $("versions").hidden = true;
  $("versions-btn").setAttribute("aria-expanded", "false");
}

async function loadConfig() {
  try {
    const r = await api("/api/config");
    state.config = await r.json();
    allowUrls(state.config);
  } catch {
    // Without the preview domain the URL gate stays closed: no preview opens.
    state.config = { model: null, howTo: "" };
  }
  $("how-to").textContent = state.config.howTo ?? "";
  configBadge();
}

// ---- the app's name (top bar): click or Enter to rename ----

let renaming = null;

function showName(name) {
  $("app-title").hidden = name === null;
  $("app-name").textContent = name ?? "";
  $("app-name").title = name ? `${name} (rename)` : "";
  document.title = name ? `${name} — Kiln` : TITLE;
}

function renameError(text) {
  $("rename-error").textContent = text;
  $("rename-error").hidden = !text;
}

function startRename() {
  if (!state.appId || renaming) return;
  renaming = { id: state.appId, was: $("app-name").textContent };
  renameError("");
  const input = $("app-name-input");
  input.value = renaming.was;
  $("app-name").hidden = true;
  input.hidden = false;
  input.focus();
  input.select();
}

async function finishRename(save, refocus) {
  const r = renaming;
  if (!r) return;
  renaming = null;
  const input = $("app-name-input");
  const name = input.value;
  input.hidden = true;
  $("app-name").hidden = false;
  if (refocus) $("app-name").focus();
  if (!save || name.trim() === r.was) return;
  if (name.trim()) showName(name.trim()); // at once; put back if the server says no
  try {
    const resp = await api(`/api/apps/${r.id}`, { method: "PATCH", body: JSON.stringify({ name }) });
    if (!resp.ok) throw new Error(await errorMessage(resp));
    const app = await resp.json();
    if (state.appId === r.id) showName(typeof app.name === "string" ? app.name : name.trim());
  } catch (e) {
    if (state.appId !== r.id) return;
    showName(r.was);
    renameError(`The name was not changed: ${e.message}`);
  }
}

// ---- places: the landing, an app, an app that is not there ----

function resetBuilder() {
  transcript.clear();
  preview.reset();
  setRunning(false);
  state.mode = "vm";
  state.shareUrl = null;
  state.versions = [];
  state.appId = null;
  state.app = null;
  state.replaying = false;
  state.snapshot = null;
  state.startLine = null;
  state.demo = false;
  if (renaming) finishRename(false, false);
  renderVersions();
  closeVersions();
  renameError("");
  showName(null);
  status("Ready", "");
  configBadge();
}

function showLanding() {
  const v = newView();
  resetBuilder();
  show("landing");
  loadApps(v);
}

async function loadApps(v) {
  let list;
  try {
    list = await getJson("/api/apps", { signal: v.abort.signal });
  } catch (e) {
    if (v === view && e.name !== "AbortError") appsError(e.message);
    return;
  }
  if (v !== view) return;
  renderApps(list.apps, (id) => navigate(`/a/${id}`));
  // A running dot goes out by itself when its turn ends.
  if (Array.isArray(list.apps) && list.apps.some((a) => a && a.running === true)) {
    setTimeout(() => v === view && loadApps(v), 4000);
  }
}

function showMissing(code, message) {
  show("missing");
  $("no-model").hidden = true;
  const notFound = code === 404 || code === undefined;
  $("missing-title").textContent = notFound ? "This app was not found" : "This app could not be loaded";
  $("missing-why").textContent = notFound
    ? "There is no app at this address that belongs to you. Apps belong to the browser (or account) that made them."
    : `${message} — try again in a moment.`;
  document.title = notFound ? "App not found — Kiln" : TITLE;
  $("missing-title").focus();
}

/** Opens the builder of app `id` from the server's copy (a link, a reload, back/forward). */
async function openApp(id) {
  const v = newView();
  resetBuilder();
  if (!APP_ID.test(id)) return showMissing(404);
  state.appId = id;
  show("builder");
  status("Loading this app…", "busy");
  preview.waitingFor("Loading your app…");
  let app;
  try {
    await configured; // the URL gate needs the preview domain
    app = await getJson(`/api/apps/${id}`, { signal: v.abort.signal });
  } catch (e) {
    if (v !== view) return;
    state.appId = null;
    return showMissing(e.status === 404 || e.status === 400 ? 404 : e.status || 0, e.message);
  }
  if (v !== view) return;
  await loadApp(app, v);
}

async function loadApp(app, v) {
  const events = Array.isArray(app.events) ? app.events : [];
  // The whole conversation, through the live stream's handler. The preview
  // is left alone meanwhile (old turns name sandboxes long gone) and set
  // once afterwards from the app's state.
  const feed = deduped(0, v);
  state.replaying = true;
  state.snapshot = { last: null, html: "" };
  for (const ev of events) feed(ev);
  const snap = state.snapshot;
  state.snapshot = null;
  const running = app.running === true;
  setRunning(running);

  const hasVm = (app.versions?.length ?? 0) > 0 || !!app.sandbox;
  const quick = snap.last ? snap.last.mode === "quick" : !hasVm && !!app.quick;
  state.mode = quick ? "quick" : "vm";
  setMode(state.mode);
  setApp(app);
  try {
    if (quick && running && snap.last) {
      preview.quickStart(snap.last.previewUrl); // the turn's HTML so far, then the rest as it comes
      preview.quickHtml = snap.html;
      state.shareUrl = checkUrl(snap.last.previewUrl, "quick").href;
    } else if (quick && app.quick?.versions?.length) {
      preview.quickShow(app.quick.url);
      state.shareUrl = checkUrl(app.quick.url, "quick").href;
    } else if (!quick && app.sandbox) {
      try {
        preview.show(app.sandbox.previewUrl);
      } catch (e) {
        preview.idle("The preview's address was refused (see the chat).");
        throw e;
      }
      state.shareUrl = checkUrl(app.sandbox.previewUrl, "preview").href;
    } else if (running) {
      preview.waitingFor(quick ? "Writing the HTML…" : "Getting a sandbox…");
    } else if (hasVm) {
      preview.idle("This app's sandbox has stopped; your next prompt restores it.");
    } else {
      preview.idle("Nothing built yet. Describe a change below.");
    }
  } catch (e) {
    if (e instanceof RefusedUrl) refused(e, quick ? "The quick app" : "The preview");
    else throw e;
  }
  if (running) {
    status("The agent is working…", "busy");
    // Where the stored copy ends; events already shown are skipped by seq.
    const stored = feed.last();
    const after = Number.isInteger(app.lastSeq) && app.lastSeq > 0 ? Math.min(app.lastSeq, stored || app.lastSeq) : stored;
    const done = await follow(app.id ?? state.appId, () => Math.max(after, feed.last()), feed, v.abort.signal);
    if (v !== view) return;
    state.replaying = false;
    if (!done) {
      setRunning(false);
      transcript.error("The connection to this turn was lost; reload the page to see where it got to.");
      status("Connection lost", "bad");
    }
  } else {
    state.replaying = false;
    if (!quick && app.sandbox) {
      const st = app.sandbox.state || "stopped";
      status(`Sandbox ${st}`, st === "running" ? "ok" : "");
    } else {
      status(quick && app.quick ? "Quick app" : "Ready", "");
    }
    if (events.length === 0) transcript.system("Welcome back. Your versions are listed under Versions.");
  }
}

function route() {
  const m = APP_PATH.exec(location.pathname);
  if (!m) return showLanding();
  let id = "";
  try {
    id = decodeURIComponent(m[1]);
  } catch {
    /* not an app id */
  }
  return openApp(id);
}

/** Goes to a place of this page (a new history entry). */
function navigate(path) {
  if (location.pathname !== path || location.search || location.hash) history.pushState(null, "", path);
  route();
}

function wire() {
  $("landing-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const p = $("landing-prompt").value;
    const mode = selectedMode("mode");
    setMode(mode);
    if (state.running || !p.trim()) return;
    $("landing-prompt").value = "";
    send(p, mode);
  });
  $("landing-prompt").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey) {
      e.preventDefault();
      $("landing-form").requestSubmit();
    }
  });
  for (const b of $("examples").querySelectorAll("button")) {
    b.onclick = () => {
      $("landing-prompt").value = b.textContent;
      $("landing-prompt").focus();
    };
  }
  for (const r of document.querySelectorAll("input[name=mode], input[name=mode2]")) {
    r.addEventListener("change", () => setMode(r.value));
  }
  $("composer").addEventListener("submit", (e) => {
    e.preventDefault();
    const p = $("prompt").value;
    if (state.running || !p.trim()) return;
    $("prompt").value = "";
    send(p, selectedMode("mode2"));
  });
  $("prompt").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey) {
      e.preventDefault();
      $("composer").requestSubmit();
    }
  });
  $("cancel").onclick = async () => {
    if (!state.appId) return toast("The app is still starting; try again in a moment");
    status("Stopping…", "busy");
    try {
      const r = await api(`/api/apps/${state.appId}/cancel`, { method: "POST" });
      if (!r.ok) toast(`Could not stop: ${await errorMessage(r)}`, 5000);
    } catch (e) {
      toast(`Could not stop: ${e.message}`, 5000);
    }
  };
  $("use-demo").onclick = () => {
    state.demo = true;
    configBadge();
    const mode = selectedMode("mode");
    send(mode === "quick" ? "A focus timer (demo)" : "A bill splitter with tip presets (demo)", mode);
  };
  $("share-btn").onclick = async () => {
    if (!state.shareUrl) return toast("Nothing to share yet");
    let link;
    try {
      link = checkUrl(state.shareUrl).href;
    } catch (e) {
      return refused(e, "Share");
    }
    try {
      await navigator.clipboard.writeText(link);
      toast("Link copied — anyone with it sees the live app");
    } catch {
      // No clipboard access (an http:// deployment, a denied permission):
      // show the link to copy by hand.
      toast(`Share this link: ${link}`, 8000);
    }
  };
  $("open-btn").onclick = () => {
    if (!state.shareUrl) return toast("Nothing to open yet");
    try {
      openTab(state.shareUrl);
    } catch (e) {
      refused(e, "Open");
    }
  };
  $("versions-btn").onclick = (e) => {
    e.stopPropagation();
    const v = $("versions");
    v.hidden = !v.hidden;
    $("versions-btn").setAttribute("aria-expanded", String(!v.hidden));
  };
  document.addEventListener("click", (e) => {
    if (!$("versions").hidden && !$("versions").contains(e.target)) closeVersions();
  });
  document.addEventListener("keydown", (e) => e.key === "Escape" && closeVersions());
  $("frame-desktop").onclick = () => {
    $("stage").classList.remove("phone");
    $("frame-desktop").classList.add("active");
    $("frame-phone").classList.remove("active");
  };
  $("frame-phone").onclick = () => {
    $("stage").classList.add("phone");
    $("frame-phone").classList.add("active");
    $("frame-desktop").classList.remove("active");
  };
  for (const b of $("tabs").querySelectorAll("button")) {
    b.onclick = () => {
      $("builder").dataset.tab = b.dataset.tab;
      for (const o of $("tabs").querySelectorAll("button")) o.classList.toggle("active", o === b);
    };
  }
  // The app keeps going on the server (a running turn too): New app only
  // leaves it, for the landing, where the next Build makes a new app.
  $("new-app").onclick = () => navigate("/");
  // Links inside the page (the brand, "Back to your apps") move without a reload.
  for (const a of document.querySelectorAll("a[data-nav]")) {
    a.addEventListener("click", (e) => {
      if (e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
      e.preventDefault();
      navigate(new URL(a.href).pathname);
    });
  }
  $("app-name").onclick = startRename;
  $("app-name-input").addEventListener("keydown", (e) => {
    if (e.key === "Enter") {
      e.preventDefault();
      finishRename(true, true);
    } else if (e.key === "Escape") {
      e.preventDefault();
      e.stopPropagation();
      finishRename(false, true);
    }
  });
  $("app-name-input").addEventListener("blur", () => finishRename(true, false));
  window.addEventListener("popstate", route);
  setInterval(() => !$("landing").hidden && refreshTimes(), 30_000);
}

async function prewarm() {
  // Fire and forget: a sandbox starts warming while the person types.
  api("/api/vm/prewarm", { method: "POST" })
    .then((r) => (r.ok ? r.json() : null))
    .then((p) => {
      if (p) $("pool-status").textContent = `Sandboxes ready: ${p.ready} · warming: ${p.warming}`;
    })
    .catch(() => {});
}

// Everything that may navigate waits for the config (the URL gate's rules).
const configured = loadConfig();
wire();
prewarm();
route();
