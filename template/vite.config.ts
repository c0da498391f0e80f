import { defineConfig } from "vite";
import react from "@vitejs/plugin-react";
import tailwindcss from "@tailwindcss/vite";

// Kiln runs this dev server inside a sandbox that has no network but loopback.
// The only way in is Kiln's preview proxy, which decides which sandbox a Host
// header may reach, so Vite's own Host check would only block legitimate
// preview domains (a deployment's base domain). Do not remove these lines:
// the preview and its HMR WebSocket depend on them.
export default defineConfig({
  plugins: [react(), tailwindcss()],
  server: {
    host: "127.0.0.1",
    port: 5173,
    strictPort: true,
    allowedHosts: true,
    // /app is an overlay mount; inotify on overlayfs missed some rewrites of
    // files copied up from the template, so changes are found by polling
    // (a small app: a stat per file every 100 ms).
    watch: { usePolling: true, interval: 100 },
  },
});
