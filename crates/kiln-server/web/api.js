// Every call to Kiln's HTTP API (docs/openapi.json) goes through `api`: it
// adds the browser's owner key in the `X-Kiln-Key` header.
//
// The key is a credential — whoever sends it owns this browser's apps — so it
// travels only in that header: never in a path, a query string, a link or
// anything else that ends up in a URL (history, logs, Referer). It is a
// UUID kept in localStorage; one key owns many apps.

const KEY = "kiln.sessionKey";
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

function uuid() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** This browser's owner key (created on first use). */
export function ownerKey() {
  let k = localStorage.getItem(KEY);
  if (!k || !UUID.test(k)) {
    k = uuid();
    localStorage.setItem(KEY, k);
  }
  return k;
}

/** `fetch` of an API path on this origin, as this browser's owner. */
export function api(path, init = {}) {
  const headers = new Headers(init.headers || {});
  headers.set("X-Kiln-Key", ownerKey());
  if (init.body !== undefined && !headers.has("content-type")) headers.set("content-type", "application/json");
  return fetch(path, { ...init, headers });
}

/** An API error body's message, or the status. */
export async function errorMessage(resp) {
  try {
    const j = await resp.json();
    return String(j.error || j.message || `HTTP ${resp.status}`);
  } catch {
    return `HTTP ${resp.status}`;
  }
}

/** GET a JSON document; throws an Error with the server's message and `status`. */
export async function getJson(path, init = {}) {
  const r = await api(path, init);
  if (!r.ok) {
    const e = new Error(await errorMessage(r));
    e.status = r.status;
    throw e;
  }
  return r.json();
}
