// The live preview: two iframes on the sandbox's preview URL, and the HMR
// handshake with the template's bridge (docs/hmr-bridge.md). When the agent
// writes a file we wait up to 800 ms for `hmr:after`; without it we load the
// preview into the standby iframe and swap when it fires `load`, so the
// person never sees a white flash. `hmr:error` shows the build error over
// the preview until an update applies.
//
// Every address a frame is pointed at passes the gate in urls.js first.
// Quick mode renders in `#quick-frame`, an opaque-origin shell document
// (quick-frame.html, served with the quick-app CSP) that this page streams
// the HTML into with postMessage; see that file for why it is not `srcdoc`.

import { QUICK_SHELL_PATH, checkUrl, clearFrame, navigateFrame } from "./urls.js";

const HMR_WAIT_MS = 800;
const $ = (id) => document.getElementById(id);

export class Preview {
  constructor() {
    this.live = $("preview-a");
    this.standby = $("preview-b");
    this.quick = $("quick-frame");
    this.url = null;
    this.origin = null;
    this.nonce = 0;
    this.lastAfter = 0;
    this.waiting = null;
    /** Quick mode: the HTML so far, and whether the turn has ended. */
    this.quickHtml = "";
    this.quickFinal = false;
    this.quickTimer = null;
    /**
     * The shell the quick frame should hold for this turn (null: none, or a
     * stored app is shown): `gen` (its `?g=`), `ready` (it said so, so the
     * frame holds it), `delivered` (it got the final render), `retries`.
     */
    this.quickShell = null;
    this.quickLoad = null;
    // Shell generations are this page's random prefix and a counter: on a
    // reload Chromium restores a frame to its last address, so a shell of
    // the previous page can say `ready` in this page's frame.
    this.quickPage = [...crypto.getRandomValues(new Uint8Array(6))].map((b) => b.toString(16).padStart(2, "0")).join("");
    this.quickCount = 0;
    this.stats = { hmr: 0, reloads: 0 };
    /** Timing marks for `kiln bench e2e`: {name, t} with performance.now(). */
    this.marks = [];
    window.addEventListener("message", (e) => this.onMessage(e));
  }

  /**
   * Shows the sandbox at `url` (no-op if already shown). Throws `RefusedUrl`
   * (and changes nothing) unless it is a sandbox preview address.
   */
  show(url) {
    const { href } = checkUrl(url, "preview");
    this.quick.hidden = true;
    if (this.url === href) return;
    if (this.swapping) {
      // A reload of the previous address must not swap in over this one.
      this.swapping = false;
      this.standby = clearFrame(this.standby);
    }
    this.live = navigateFrame(this.live, href, "preview");
    this.url = href;
    this.origin = new URL(href).origin;
    $("preview-url").textContent = href;
    this.live.onload = () => this.ready();
  }

  /** Back to no app: empty frames, the placeholder, nothing pending. */
  reset(text = "Your app will appear here.") {
    if (this.waiting) this.waiting.resolve(false);
    this.waiting = null;
    this.nonce++;
    clearTimeout(this.quickTimer);
    clearTimeout(this.quickLoad);
    this.quickTimer = null;
    this.quickLoad = null;
    this.quickShell = null;
    this.quickHtml = "";
    this.quickFinal = false;
    this.swapping = false;
    this.live.onload = null;
    this.standby.onload = null;
    this.live = clearFrame(this.live);
    this.standby = clearFrame(this.standby);
    this.quick = clearFrame(this.quick);
    this.quick.hidden = true;
    this.url = null;
    this.origin = null;
    $("preview-url").textContent = "";
    this.clearError();
    this.waitingFor(text);
  }

  mark(name) {
    this.marks.push({ name, t: performance.now() });
    if (this.marks.length > 500) this.marks.shift();
  }

  ready() {
    this.mark("preview-load");
    $("empty-preview").hidden = true;
  }

  waitingFor(text) {
    const box = $("empty-preview");
    box.hidden = false;
    box.classList.remove("idle");
    $("empty-text").textContent = text;
  }

  idle(text) {
    const box = $("empty-preview");
    box.hidden = false;
    box.classList.add("idle");
    $("empty-text").textContent = text;
  }

  onMessage(e) {
    const d = e.data;
    if (d && d.source === "kiln-quick") return this.onQuickMessage(e);
    if (!d || d.source !== "kiln-preview") return;
    if (e.origin !== this.origin || e.source !== this.live.contentWindow) return;
    if (d.type === "hmr:after") {
      this.mark("hmr-after");
      this.lastAfter = performance.now();
      this.stats.hmr++;
      this.clearError();
      if (this.waiting) this.waiting.resolve(true);
    } else if (d.type === "hmr:error") {
      const m = d.error?.message;
      this.showError(typeof m === "string" && m ? m : "The build failed.");
    }
  }

  showError(message) {
    $("build-error-text").textContent = message;
    $("build-error").hidden = false;
  }

  clearError() {
    $("build-error").hidden = true;
  }

  /** A file changed in the sandbox: hot update, or reload without a flash. */
  fileChanged() {
    if (!this.url) return;
    this.mark("file");
    const nonce = ++this.nonce;
    // An update that landed just before the event reached us counts.
    if (performance.now() - this.lastAfter < 300) return;
    if (this.waiting) this.waiting.resolve(false);
    let resolve;
    const done = new Promise((r) => (resolve = r));
    const timer = setTimeout(() => resolve(false), HMR_WAIT_MS);
    this.waiting = { resolve: (v) => { clearTimeout(timer); resolve(v); } };
    done.then((hot) => {
      if (nonce !== this.nonce) return;
      this.waiting = null;
      if (!hot) this.reload();
    });
  }

  /** No hot update awaited and no reload in flight. */
  settled() {
    return !this.waiting && !this.swapping;
  }

  /** Loads the preview in the standby frame and swaps when it has loaded. */
  reload() {
    if (!this.url) return;
    this.stats.reloads++;
    this.swapping = true;
    const u = new URL(this.url);
    u.searchParams.set("kiln_refresh", String(this.nonce));
    let next;
    try {
      next = navigateFrame(this.standby, u.toString(), "preview");
    } catch (e) {
      this.swapping = false;
      throw e;
    }
    this.standby = next;
    next.onload = () => {
      if (next !== this.standby) return; // a later reload or a reset replaced it
      next.onload = null;
      this.swapping = false;
      next.classList.replace("standby", "live");
      this.live.classList.replace("live", "standby");
      const old = this.live;
      old.onload = null;
      this.live = next;
      this.standby = clearFrame(old);
      this.clearError();
      this.ready();
    };
  }

  /** Quick mode: render the HTML written so far (throttled). */
  quickDelta(delta) {
    if (typeof delta !== "string") return;
    this.quickHtml += delta;
    if (this.quickTimer) return;
    this.quickTimer = setTimeout(() => {
      this.quickTimer = null;
      this.renderQuick();
    }, 120);
  }

  /**
   * A quick turn starts: a fresh shell in the quick frame (a new window, so
   * nothing of the previous version's scripts lives on). `url` is the quick
   * app's address (shown above the frame); throws `RefusedUrl` unless it is
   * one.
   */
  quickStart(url) {
    const { href } = checkUrl(url, "quick");
    clearTimeout(this.quickTimer);
    this.quickTimer = null;
    this.quickHtml = "";
    this.quickFinal = false;
    this.quickShell = { gen: "", ready: false, delivered: false, retries: 0 };
    // One navigation per task: a replayed log starts several turns in a row,
    // and Chromium does not always commit rapid navigations of one frame in
    // the order they were made (an older shell can replace a newer one).
    if (!this.quickLoad) this.quickLoad = setTimeout(() => this.loadShell(), 0);
    this.url = null;
    this.quick.hidden = false;
    $("preview-url").textContent = href;
    $("empty-preview").hidden = true;
  }

  /** Points the quick frame at a new shell for the current turn. */
  loadShell() {
    clearTimeout(this.quickLoad);
    this.quickLoad = null;
    const sh = this.quickShell;
    if (!sh) return;
    sh.gen = `${this.quickPage}-${++this.quickCount}`;
    sh.ready = false;
    sh.delivered = false;
    this.quick = navigateFrame(this.quick, `${location.origin}${QUICK_SHELL_PATH}?g=${sh.gen}`, "quick");
  }

  /**
   * Messages from the quick frame: only `ready`, from that frame. Our
   * shell's `ready` lets the HTML flow. Another document's `ready` (an older
   * shell, a restored one) means the frame holds, or is about to hold,
   * something else: if ours had already loaded it was displaced, so load a
   * new one (its render is the whole state again); if ours is still loading,
   * look again shortly. A few retries per turn at most: the app itself can
   * post anything.
   */
  onQuickMessage(e) {
    const d = e.data;
    const sh = this.quickShell;
    if (e.source !== this.quick.contentWindow || e.origin !== "null" || d.type !== "ready" || !sh || !sh.gen) return;
    if (d.gen === `?g=${sh.gen}`) {
      if (sh.ready) return;
      sh.ready = true;
      if (this.quickHtml) this.renderQuick(); // what came before the shell loaded
      return;
    }
    if (sh.retries >= 3) return;
    const gen = sh.gen;
    const retry = () => {
      if (this.quickShell !== sh || sh.gen !== gen || this.quickLoad) return;
      sh.retries++;
      this.loadShell();
    };
    if (sh.ready) retry();
    else setTimeout(() => !sh.ready && retry(), 3000);
  }

  renderQuick() {
    this.quick.hidden = false;
    const sh = this.quickShell;
    if (!sh || !sh.ready || sh.delivered) return; // sent when the shell says ready
    // The shell's origin is opaque ("null"), so "*" is the only target that
    // reaches it; what is sent is the app's own HTML. After the final render
    // the window is the app's: nothing more is sent to it.
    this.quick.contentWindow.postMessage({ source: "kiln-quick", type: "render", html: this.quickHtml, final: this.quickFinal }, "*");
    if (this.quickFinal) sh.delivered = true;
  }

  quickDone() {
    clearTimeout(this.quickTimer);
    this.quickTimer = null;
    this.quickFinal = true;
    if (this.quickHtml) this.renderQuick();
  }

  /**
   * Shows a stored quick app (after a page reload): `/q/<id>`, served with
   * the quick-app CSP. Throws `RefusedUrl` unless `url` is a quick app's.
   */
  quickShow(url) {
    this.quick = navigateFrame(this.quick, url, "quick");
    const href = this.quick.getAttribute("src");
    this.url = null;
    this.quickShell = null;
    this.quickHtml = "";
    this.quick.hidden = false;
    $("preview-url").textContent = href;
    $("empty-preview").hidden = true;
  }
}
