// Kiln's builder UI: landing (prompt + mode), then chat beside a live
// preview, versions, share and cancel. Talks only to Kiln's HTTP API
// (docs/openapi.json); events are docs/chat-events.md.
//
// Events are untrusted input: what a sandbox's agent says reaches this page
// through them. So every address from an event (or from the API) passes the
// gate in urls.js before anything navigates to it or copies it, text is
// only ever inserted as text (chat.js), and a malformed event is skipped
// without stopping the stream. The page runs under a CSP with no inline
// script and Trusted Types required (web.rs), so no HTML sink is used here.

import { chat, resume, errorMessage } from "./stream.js";
import { Preview } from "./preview.js";
import { Transcript } from "./chat.js";
import { RefusedUrl, allowUrls, checkUrl, openTab } from "./urls.js";

const $ = (id) => document.getElementById(id);
const KEY = "kiln.sessionKey";

function uuid() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

function sessionKey() {
  let k = localStorage.getItem(KEY);
  if (!k) {
    k = uuid();
    localStorage.setItem(KEY, k);
  }
  return k;
}

const state = {
  key: sessionKey(),
  config: null,
  demo: localStorage.getItem("kiln.demo") === "1",
  running: false,
  mode: "vm",
  shareUrl: null,
  quickId: null,
  versions: [],
};
const preview = new Preview();
const transcript = new Transcript();
window.kiln = { state, preview }; // for tests and the curious

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

function showBuilder() {
  $("landing").hidden = true;
  $("builder").hidden = false;
  $("new-app").hidden = false;
  if (!$("builder").dataset.tab) $("builder").dataset.tab = "chat";
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
  switch (ev.type) {
    case "session":
      // Live turns show the prompt when it is sent; a replayed log shows it here.
      if (state.replaying) {
        transcript.user(String(ev.prompt ?? ""));
        setRunning(true); // until this turn's done (if the log has it yet)
      }
      preview.mark("session");
      state.mode = ev.mode === "quick" ? "quick" : "vm";
      state.shareUrl = null;
      if (ev.model) modelBadge(ev.model);
      if (state.mode === "quick") {
        state.quickId = ev.appId;
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
        const how = ev.warm ? `Warm start · sandbox ready in ${fmtMs(ev.claimMs ?? 0)}` : `Cold start · sandbox booted in ${fmtMs(ev.bootMs ?? 0)}`;
        state.startLine = how;
        status(`${how} · agent working…`, "busy");
      }
      break;
    case "boot":
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
      if (state.mode === "vm") preview.fileChanged();
      break;
    case "html":
      preview.quickDelta(ev.delta);
      break;
    case "version":
      transcript.version(ev);
      refreshSession();
      break;
    case "error":
      transcript.error(
        /no more turns/.test(ev.message)
          ? "The recorded replay has no more steps. Configure a model (see the notice at the top) to keep building your own ideas."
          : String(ev.message ?? "Something went wrong."),
      );
      if (ev.code === "no_model") $("no-model").hidden = false;
      break;
    case "done":
      setRunning(false);
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

async function send(prompt, mode) {
  if (state.running || !prompt.trim()) return;
  preview.mark("send");
  showBuilder();
  transcript.user(prompt);
  setRunning(true);
  status(mode === "quick" ? "Asking for one HTML file…" : "Getting your sandbox…", "busy");
  if (mode === "vm" && !preview.url) preview.waitingFor("Getting a sandbox…");
  try {
    await configured; // the URL gate needs the preview domain
    await chat({ sessionKey: state.key, prompt, mode, demo: state.demo }, onEvent);
  } catch (e) {
    transcript.error(e.message);
    status("Not sent", "bad");
  } finally {
    if (state.running) setRunning(false);
  }
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

async function refreshSession() {
  const r = await fetch(`/api/sessions/${state.key}`);
  if (!r.ok) return null;
  const s = await r.json();
  const quick = state.mode === "quick";
  state.versions = quick && s.quick ? s.quick.versions : s.versions;
  renderVersions(s);
  return s;
}

function renderVersions(s) {
  const list = $("versions-list");
  list.textContent = "";
  const quick = state.mode === "quick";
  $("versions-count").textContent = String(state.versions.length);
  state.versions.forEach((v, i) => {
    const li = document.createElement("li");
    if (i === 0) li.className = "current";
    const what = document.createElement("div");
    what.className = "what";
    const m = document.createElement("div");
    m.className = "msgline";
    m.textContent = v.message;
    m.title = v.message;
    const meta = document.createElement("div");
    meta.className = "meta";
    meta.textContent = `${v.sha.slice(0, 7)} · ${new Date(v.time * 1000).toLocaleTimeString()}`;
    what.append(m, meta);
    li.append(what);
    if (i > 0) {
      const b = document.createElement("button");
      b.className = "ghost";
      if (quick) {
        b.textContent = "Open";
        b.onclick = () => {
          try {
            openTab(`${location.origin}/q/${s.quick.id}/${v.sha}`);
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
  closeVersions();
  setRunning(true);
  status(`Restoring ${sha.slice(0, 7)}…`, "busy");
  try {
    const r = await fetch(`/api/sessions/${state.key}/versions/${encodeURIComponent(sha)}/restore`, { method: "POST" });
    if (!r.ok) throw new Error(await errorMessage(r));
    const j = await r.json();
    if (j.previewUrl) {
      preview.show(j.previewUrl); // throws RefusedUrl: reported below
      state.shareUrl = checkUrl(j.previewUrl, "preview").href;
    }
    preview.fileChanged();
    transcript.system(`Restored version ${sha.slice(0, 7)}.`);
    status(`Restored ${sha.slice(0, 7)}`, "ok");
    await refreshSession();
  } catch (e) {
    transcript.error(`Restore failed: ${e.message}`);
    status("Restore failed", "bad");
  } finally {
    setRunning(false);
  }
}

function closeVersions() {
  $("versions").hidden = true;
  $("versions-btn").setAttribute("aria-expanded", "false");
}

async function loadConfig() {
  try {
    const r = await fetch("/api/config");
    state.config = await r.json();
    allowUrls(state.config);
  } catch {
    // Without the preview domain the URL gate stays closed: no preview opens.
    state.config = { model: null, howTo: "" };
  }
  const c = state.config;
  if (!c.model) {
    $("no-model").hidden = state.demo;
    $("how-to").textContent = c.howTo;
    if (state.demo) modelBadge("demo");
  } else {
    modelBadge(c.model);
  }
}

/** Back to where this session was (after a reload). */
async function resumeSession() {
  const s = await refreshSession();
  if (!s) return;
  const hasVm = s.versions.length > 0 || s.sandbox;
  if (!hasVm && !s.quick) return;
  showBuilder();
  if (s.quick && !hasVm) {
    state.mode = "quick";
    setMode("quick");
    await refreshSession();
    try {
      state.shareUrl = checkUrl(s.quick.url, "quick").href;
    } catch (e) {
      refused(e, "The quick app");
    }
  } else if (s.sandbox) {
    try {
      preview.show(s.sandbox.previewUrl);
      state.shareUrl = checkUrl(s.sandbox.previewUrl, "preview").href;
    } catch (e) {
      refused(e, "The preview");
    }
    status(`Sandbox ${s.sandbox.state || "stopped"}`, s.sandbox.state === "running" ? "ok" : "");
  } else {
    preview.idle("This app's sandbox has stopped; your next prompt restores it.");
  }
  if (s.lastSeq > 0) {
    if (s.running) setRunning(true);
    state.replaying = true;
    await resume(state.key, 0, onEvent).catch(() => {});
    state.replaying = false;
  } else {
    transcript.system("Welcome back. Your versions are listed under Versions.");
  }
  // The stored quick app, unless the log's quick turns are already showing
  // (one navigation of the quick frame, not two racing).
  if (s.quick && !hasVm && s.quick.versions.length && !preview.quickShell) {
    try {
      preview.quickShow(s.quick.url);
    } catch (e) {
      refused(e, "The quick app");
    }
  }
}

function wire() {
  $("landing-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const p = $("landing-prompt").value;
    const mode = selectedMode("mode");
    setMode(mode);
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
    await fetch("/api/chat/cancel", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ sessionKey: state.key }),
    });
    status("Stopping…", "busy");
  };
  $("use-demo").onclick = () => {
    state.demo = true;
    localStorage.setItem("kiln.demo", "1");
    modelBadge("demo");
    $("no-model").hidden = true;
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
  $("new-app").onclick = () => {
    if (state.running) return toast("Wait for the agent to finish first");
    localStorage.setItem(KEY, uuid());
    localStorage.removeItem("kiln.demo");
    location.href = "/";
  };
}

async function prewarm() {
  // Fire and forget: a sandbox starts warming while the person types.
  fetch("/api/vm/prewarm", { method: "POST" })
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
configured.then(resumeSession);
