// The live preview: two iframes on the sandbox's preview URL, and the HMR
// handshake with the template's bridge (docs/hmr-bridge.md). When the agent
// writes a file we wait up to 800 ms for `hmr:after`; without it we load the
// preview into the standby iframe and swap when it fires `load`, so the
// person never sees a white flash. `hmr:error` shows the build error over
// the preview until an update applies.

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
    this.quickHtml = "";
    this.quickTimer = null;
    this.stats = { hmr: 0, reloads: 0 };
    /** Timing marks for `kiln bench e2e`: {name, t} with performance.now(). */
    this.marks = [];
    window.addEventListener("message", (e) => this.onMessage(e));
  }

  /** Shows the sandbox at `url` (no-op if already shown). */
  show(url) {
    this.quick.hidden = true;
    if (this.url === url) return;
    this.url = url;
    this.origin = new URL(url).origin;
    $("preview-url").textContent = url;
    this.live.src = url;
    this.live.onload = () => this.ready();
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
    if (!d || d.source !== "kiln-preview") return;
    if (e.origin !== this.origin || e.source !== this.live.contentWindow) return;
    if (d.type === "hmr:after") {
      this.mark("hmr-after");
      this.lastAfter = performance.now();
      this.stats.hmr++;
      this.clearError();
      if (this.waiting) this.waiting.resolve(true);
    } else if (d.type === "hmr:error") {
      this.showError(d.error?.message || "The build failed.");
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
    const next = this.standby;
    const u = new URL(this.url);
    u.searchParams.set("kiln_refresh", String(this.nonce));
    next.onload = () => {
      next.onload = null;
      this.swapping = false;
      next.classList.replace("standby", "live");
      this.live.classList.replace("live", "standby");
      const old = this.live;
      this.live = next;
      this.standby = old;
      old.onload = null;
      old.src = "about:blank";
      this.clearError();
      this.ready();
    };
    next.src = u.toString();
  }

  /** Quick mode: render the HTML written so far (throttled). */
  quickDelta(delta) {
    this.quickHtml += delta;
    if (this.quickTimer) return;
    this.quickTimer = setTimeout(() => {
      this.quickTimer = null;
      this.renderQuick();
    }, 120);
  }

  quickStart(url) {
    this.quickHtml = "";
    this.url = null;
    this.quick.hidden = false;
    $("preview-url").textContent = url;
    $("empty-preview").hidden = true;
  }

  renderQuick() {
    this.quick.hidden = false;
    this.quick.srcdoc = this.quickHtml;
  }

  quickDone() {
    clearTimeout(this.quickTimer);
    this.quickTimer = null;
    if (this.quickHtml) this.renderQuick();
  }

  /** Shows a stored quick app (after a page reload). */
  quickShow(url) {
    this.url = null;
    this.quick.hidden = false;
    this.quick.removeAttribute("srcdoc");
    this.quick.src = url;
    $("preview-url").textContent = url;
    $("empty-preview").hidden = true;
  }
}
