// Kiln HMR bridge: forwards Vite's HMR client events to the page that embeds
// this preview (Kiln's builder UI), so it can tell a hot update from a stall.
// Imported first by main.tsx. Message schema (docs/hmr-bridge.md):
//   { source: "kiln-preview",
//     type: "hmr:before" | "hmr:after" | "hmr:full-reload" | "hmr:error" | "hmr:connected",
//     files: string[], error?: { message: string, file?: string } }
// Keep this file: the builder waits for "hmr:after" before deciding to reload.

type BridgeType =
  | "hmr:before"
  | "hmr:after"
  | "hmr:full-reload"
  | "hmr:error"
  | "hmr:connected";

interface UpdatePayload {
  updates?: { path?: string; acceptedPath?: string }[];
}

function post(type: BridgeType, files: string[], error?: { message: string; file?: string }) {
  if (window.parent === window) return;
  const msg: Record<string, unknown> = { source: "kiln-preview", type, files };
  if (error) msg.error = error;
  window.parent.postMessage(msg, "*");
}

function filesOf(payload: UpdatePayload | undefined): string[] {
  const seen = new Set<string>();
  for (const u of payload?.updates ?? []) {
    const p = u.path ?? u.acceptedPath;
    if (p) seen.add(p);
  }
  return [...seen];
}

if (import.meta.hot) {
  const hot = import.meta.hot;
  hot.on("vite:beforeUpdate", (p: UpdatePayload) => post("hmr:before", filesOf(p)));
  hot.on("vite:afterUpdate", (p: UpdatePayload) => post("hmr:after", filesOf(p)));
  hot.on("vite:beforeFullReload", (p: { path?: string }) =>
    post("hmr:full-reload", p?.path ? [p.path] : []),
  );
  hot.on("vite:error", (p: { err?: { message?: string; id?: string } }) =>
    post("hmr:error", p?.err?.id ? [p.err.id] : [], {
      message: p?.err?.message ?? "unknown build error",
      file: p?.err?.id,
    }),
  );
  hot.on("vite:ws:connect", () => post("hmr:connected", []));
  // The socket may already be open by the time this module runs.
  post("hmr:connected", []);
}

export {};
