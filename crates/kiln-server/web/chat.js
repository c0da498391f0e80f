// The chat transcript: text streams into the current agent message; tool
// calls are compact cards updated in place by id (file written, command
// run, browser check with its result). Everything is inserted as text,
// never as HTML: the model's output (titles, paths, commands, outputs,
// errors) is untrusted, and so is every field's type — a value that should
// be a string is made one before it is shown, and a card's state only ever
// becomes one of the known class names.

const $ = (id) => document.getElementById(id);

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

const STATE_LABEL = { pending: "queued", in_progress: "running…", completed: "done", failed: "failed" };

/** `v` as text: strings as they are, anything else as JSON ("" for none). */
function str(v) {
  if (v === undefined || v === null) return "";
  if (typeof v === "string") return v;
  try {
    return JSON.stringify(v) ?? String(v);
  } catch {
    return String(v);
  }
}

/** What a tool card says: an icon and a one-line title. */
function describe(call) {
  const raw = call.input && typeof call.input === "object" ? call.input : {};
  const input = { url: str(raw.url), path: str(raw.path), command: str(raw.command), content: raw.content };
  const title = str(call.title);
  // kiln-agent titles MCP calls "Browser: navigate"; others use the tool name.
  const name = title.startsWith("Browser: ") ? `browser_${title.slice(9).replace(/ /g, "_")}` : title.split(/[ (:]/)[0];
  if (/^browser_/.test(name)) {
    const what = {
      browser_navigate: `Opened ${input.url || "the app"} in Chromium`,
      browser_snapshot: "Read the page (accessibility snapshot)",
      browser_take_screenshot: "Took a screenshot",
      browser_console_messages: "Checked the console",
      browser_click: "Clicked in the page",
      browser_type: "Typed in the page",
    }[name];
    return { icon: "🌐", text: what || `Browser: ${title}` };
  }
  if (call.kind === "edit" || input.content !== undefined) {
    const verb = title.startsWith("Edit ") ? "Edited" : "Wrote";
    return { icon: "✎", text: input.path ? `${verb} ${input.path}` : title || "Edited a file" };
  }
  if (call.kind === "read") return { icon: "📄", text: input.path ? `Read ${input.path}` : title };
  if (call.kind === "search") return { icon: "🔎", text: title || "Searched" };
  if (call.kind === "execute") return { icon: "$", text: input.command || title || "Ran a command" };
  if (call.kind === "delete") return { icon: "🗑", text: title || "Deleted a file" };
  return { icon: "•", text: title || "Tool call" };
}

export class Transcript {
  constructor() {
    this.box = $("messages");
    this.cards = new Map();
    this.current = null;
    this.thought = null;
  }

  clear() {
    this.box.textContent = "";
    this.cards.clear();
    this.current = null;
    this.thought = null;
  }

  scroll() {
    const b = this.box;
    if (b.scrollHeight - b.scrollTop - b.clientHeight < 160) b.scrollTop = b.scrollHeight;
  }

  add(node) {
    this.box.append(node);
    this.scroll();
    return node;
  }

  /**
   * A new turn begins: tool ids are only unique within a turn (a new
   * sandbox's agent may reuse them), so later events never update an
   * earlier turn's card.
   */
  turn() {
    this.cards.clear();
    this.current = null;
    this.thought = null;
  }

  user(text) {
    this.current = null;
    this.thought = null;
    this.add(el("div", "msg user", text));
    this.box.scrollTop = this.box.scrollHeight;
  }

  system(text) {
    this.current = null;
    return this.add(el("div", "msg system", text));
  }

  text(delta) {
    this.thought = null;
    if (!this.current) this.current = this.add(el("div", "msg agent", ""));
    this.current.textContent += str(delta);
    this.scroll();
  }

  thinking(delta) {
    if (!this.thought) this.thought = this.add(el("div", "msg thought", ""));
    this.thought.textContent += str(delta);
    this.scroll();
  }

  error(message) {
    this.current = null;
    this.add(el("div", "msg error", str(message)));
  }

  tool(ev) {
    const id = str(ev.id);
    let c = this.cards.get(id);
    if (!c) {
      const node = el("div", "card");
      node.dataset.toolId = id;
      const head = el("div", "head");
      const icon = el("span", "icon");
      const title = el("span", "title");
      const state = el("span", "state");
      head.append(icon, title, state);
      node.append(head);
      c = { node, icon, title, state, call: {}, out: null };
      this.cards.set(id, c);
      this.current = null;
      this.thought = null;
      this.add(node);
    }
    for (const k of ["title", "kind", "status", "input", "output"]) if (ev[k] !== undefined) c.call[k] = ev[k];
    const d = describe(c.call);
    c.icon.textContent = d.icon;
    c.title.textContent = d.text;
    c.title.title = d.text;
    const st = Object.hasOwn(STATE_LABEL, c.call.status) ? c.call.status : "pending";
    c.state.textContent = STATE_LABEL[st];
    c.node.className = `card ${st}`;
    if (c.call.output) {
      if (!c.out) {
        const det = el("details");
        det.append(el("summary", "", "output"));
        c.out = el("pre");
        det.append(c.out);
        c.node.append(det);
      }
      c.out.textContent = str(c.call.output);
    }
    this.scroll();
  }

  version(v) {
    this.current = null;
    const files = Array.isArray(v.files) ? v.files.length : 0;
    const n = el("div", "version-note", `✓ Version ${str(v.sha).slice(0, 7)} saved · ${files} file${files === 1 ? "" : "s"} changed`);
    this.add(n);
  }
}
