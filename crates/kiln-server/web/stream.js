// Reading Kiln's NDJSON chat stream (docs/chat-events.md), resuming with
// GET /api/apps/<app id>/events?after=<last seq> when the connection drops
// mid-turn. A line that is not a JSON object is skipped (and logged): one
// malformed event must not end the stream.

import { api, errorMessage } from "./api.js";

export { errorMessage };

const APP_ID = /^[0-9a-f]{32}$/;

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

const sleep = (ms, signal) =>
  new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => (clearTimeout(t), resolve()), { once: true });
  });

/**
 * Sends a prompt (`body`: prompt, mode, appId for an existing app, demo) and
 * feeds every event to onEvent until `done`; if the connection breaks first,
 * resumes from the last seq of the app named by the `session` event (up to 5
 * times). Resolves `{done, appId}`: `done` false means the stream was lost
 * before the turn ended (or `signal` aborted it). Throws an Error with the
 * server's message (and `status`) when the request is refused.
 */
export async function chat(body, onEvent, signal) {
  let last = 0;
  let sawDone = false;
  let appId = typeof body.appId === "string" ? body.appId : null;
  const track = (ev) => {
    if (signal?.aborted) return;
    if (typeof ev.seq === "number") {
      if (!(ev.seq > last)) return;
      last = ev.seq;
    }
    if (ev.type === "session" && typeof ev.appId === "string" && APP_ID.test(ev.appId)) appId = ev.appId;
    if (ev.type === "done") sawDone = true;
    onEvent(ev);
  };
  try {
    const resp = await api("/api/chat", { method: "POST", body: JSON.stringify(body), signal });
    if (!resp.ok) {
      const err = new Error(await errorMessage(resp));
      err.status = resp.status;
      throw err;
    }
    await readNdjson(resp, track);
  } catch (e) {
    if (e.status) throw e;
  }
  if (!sawDone && appId) sawDone = await follow(appId, () => last, track, signal, true);
  return { done: sawDone, appId };
}

/**
 * Follows an app's running turn: streams its events after `after()` until
 * `done`, retrying a lost connection up to 5 times (0.5 to 2.5 s apart;
 * `waitFirst`: also before the first try). Resolves whether `done` came.
 */
export async function follow(appId, after, onEvent, signal, waitFirst = false) {
  let sawDone = false;
  const watch = (ev) => {
    if (ev.type === "done") sawDone = true;
    onEvent(ev);
  };
  for (let tries = 0; !sawDone && !signal?.aborted && tries < 6; tries++) {
    if (tries > 0 || waitFirst) await sleep(500 * (tries + (waitFirst ? 1 : 0)), signal);
    if (signal?.aborted) break;
    try {
      await resume(appId, after(), watch, signal);
    } catch {
      /* try again */
    }
  }
  return sawDone;
}

/** Streams the app's events after `after` (its whole log for 0). */
export async function resume(appId, after, onEvent, signal) {
  if (!APP_ID.test(appId)) throw new Error("not an app id");
  const q = new URLSearchParams({ after: String(after) });
  const resp = await api(`/api/apps/${appId}/events?${q}`, { signal });
  if (!resp.ok) throw new Error(await errorMessage(resp));
  await readNdjson(resp, onEvent);
}
