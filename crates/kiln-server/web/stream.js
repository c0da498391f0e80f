// Reading Kiln's NDJSON chat stream (docs/chat-events.md), resuming with
// /api/chat/events?after=<last seq> when the connection drops mid-turn.
// A line that is not a JSON object is skipped (and logged): one malformed
// event must not end the stream.

function line(text, onEvent) {
  let ev;
  try {
    ev = JSON.parse(text);
  } catch {
    console.warn("skipped a chat event that is not JSON");
    return;
  }
  if (ev && typeof ev === "object" && !Array.isArray(ev)) onEvent(ev);
}

/** Reads NDJSON lines from a fetch Response, calling onEvent for each. */
export async function readNdjson(resp, onEvent) {
  const reader = resp.body.getReader();
  const decoder = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += decoder.decode(value, { stream: true });
    let nl;
    while ((nl = buf.indexOf("\n")) >= 0) {
      const text = buf.slice(0, nl).trim();
      buf = buf.slice(nl + 1);
      if (text) line(text, onEvent);
    }
  }
  if (buf.trim()) line(buf.trim(), onEvent);
}

/** An API error body's message, or the status. */
export async function errorMessage(resp) {
  try {
    const j = await resp.json();
    return j.error || j.message || `HTTP ${resp.status}`;
  } catch {
    return `HTTP ${resp.status}`;
  }
}

/**
 * Sends a prompt and feeds every event to onEvent until `done`; if the
 * connection breaks first, resumes from the last seq (up to 5 times).
 * Throws an Error with the server's message on a 4xx/5xx.
 */
export async function chat(body, onEvent) {
  let last = 0;
  let sawDone = false;
  const track = (ev) => {
    if (!(ev.seq > last)) return;
    last = ev.seq;
    if (ev.type === "done") sawDone = true;
    onEvent(ev);
  };
  try {
    const resp = await fetch("/api/chat", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
    });
    if (!resp.ok) {
      const err = new Error(await errorMessage(resp));
      err.status = resp.status;
      throw err;
    }
    await readNdjson(resp, track);
  } catch (e) {
    if (e.status) throw e;
  }
  for (let tries = 0; !sawDone && tries < 5; tries++) {
    await new Promise((r) => setTimeout(r, 500 * (tries + 1)));
    try {
      await resume(body.sessionKey, last, track);
    } catch {
      /* try again */
    }
  }
}

/** Streams the events after `after` (all of them for 0). */
export async function resume(sessionKey, after, onEvent) {
  const q = new URLSearchParams({ sessionKey, after: String(after) });
  const resp = await fetch(`/api/chat/events?${q}`);
  if (!resp.ok) throw new Error(await errorMessage(resp));
  await readNdjson(resp, onEvent);
}
