import path from "node:path";
import { defineConfig, type Plugin } from "vite";
import react from "@vitejs/plugin-react";
import tailwindcss from "@tailwindcss/vite";

// kiln-envd calls GET /__kiln/changed?event=change&path=src/App.tsx after
// each file it writes or deletes for the agent (or a restore), so the change
// reaches the preview at once instead of at the watcher's next poll. Kiln's
// preview proxy never forwards /__kiln/ from outside the sandbox.
function kilnChanges(): Plugin {
  return {
    name: "kiln-changes",
    configureServer(server) {
      server.middlewares.use("/__kiln/changed", (req, res) => {
        const url = new URL(req.url ?? "", "http://localhost");
        const event = url.searchParams.get("event");
        const rel = url.searchParams.get("path") ?? "";
        const root = server.config.root;
        const abs = path.resolve(root, rel);
        if ((event === "add" || event === "change" || event === "unlink") && abs.startsWith(root + path.sep)) {
          server.watcher.emit(event, abs);
          res.statusCode = 204;
        } else {
          res.statusCode = 400;
        }
        res.end();
      });
    },
  };
}

// Kiln runs this dev server inside a sandbox that has no network but loopback.
// The only way in is Kiln's preview proxy, which decides which sandbox a Host
// header may reach, so Vite's own Host check would only block legitimate
// preview domains (a deployment's base domain). Do not remove these lines:
// the preview and its HMR WebSocket depend on them.
export default defineConfig({
  plugins: [react(), tailwindcss(), kilnChanges()],
  server: {
    host: "127.0.0.1",
    port: 5173,
    strictPort: true,
    allowedHosts: true,
    // /app is an overlay mount; inotify on overlayfs missed some rewrites of
    // files copied up from the template, so files that commands write are
    // found by polling (a stat per file every 100 ms); files written through
    // envd arrive at once through kilnChanges().
    watch: { usePolling: true, interval: 100 },
  },
});
