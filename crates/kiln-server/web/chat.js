// The chat transcript: text streams into the current agent message; tool
// calls are compact cards updated in place by id (file written, command
// run, browser check with its result). Everything is inserted as text,
// never as HTML: the model's output is untrusted.

const $ = (id) => document.getElementById(id);

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

const STATE_LABEL = { pending: "queued", in_progress: "running…", completed: "done", failed: "failed" };

/** What a tool card says: an icon and a one-line title. */
function describe(call) {
  const input = call.input || {};
  const title = call.title || "";
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
    this.current.textContent += delta;
    this.scroll();
  }

  thinking(delta) {
    if (!this.thought) this.thought = this.add(el("div", "msg thought", ""));
    this.thought.textContent += delta;
    this.scroll();
  }

  error(message) {
    this.current = null;
    this.add(el("div", "msg error", message));
  }

  tool(ev) {
    let c = this.cards.get(ev.id);
    if (!c) {
      const node = el("div", "card");
      node.dataset.toolId = ev.id;
      const head = el("div", "head");
      const icon = el("span", "icon");
      const title = el("span", "title");
      const state = el("span", "state");
      head.append(icon, title, state);
      node.append(head);
      c = { node, icon, title, state, call: {}, out: null };
      this.cards.set(ev.id, c);
      this.current = null;
      this.thought = null;
      this.add(node);
    }
    for (const k of ["title", "kind", "status", "input", "output"]) if (ev[k] !== undefined) c.call[k] = ev[k];
    const d = describe(c.call);
    c.icon.textContent = d.icon;
    c.title.textContent = d.text;
    c.title.title = d.text;
    const st = c.call.status || "pending";
    c.state.textContent = STATE_LABEL[st] || st;
    c.node.className = `card ${st}`;
    if (c.call.output) {
      if (!c.out) {
        const det = el("details");
        det.append(el("summary", "", "output"));
        c.out = el("pre");
        det.append(c.out);
        c.node.append(det);
      }
      c.out.textContent = c.call.output;
    }
    this.scroll();
  }

  version(v) {
    this.current = null;
    const n = el("div", "version-note", `✓ Version ${v.sha.slice(0, 7)} saved · ${v.files.length} file${v.files.length === 1 ? "" : "s"} changed`);
    this.add(n);
  }
}
