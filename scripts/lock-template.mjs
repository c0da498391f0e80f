#!/usr/bin/env node
// Regenerates template/package-lock.json so that `npm ci` works on every machine.
//
// Why: npm only records optional platform packages that the registry it talked
// to could resolve. When the lockfile is written against a registry (or mirror)
// that serves only some platforms, the other optional entries are left out and
// `npm ci` then refuses the lockfile ("Missing: @tailwindcss/oxide-… from lock
// file"). Each optional dependency we cannot resolve is recorded as a
// platform-restricted optional stub: `npm ci` sees it, checks os/cpu, and skips
// it on Linux x86_64 without fetching anything.
//
// Usage: node scripts/lock-template.mjs   (from the repo root; needs npm)
import { execFileSync } from "node:child_process";
import { readFileSync, writeFileSync, rmSync } from "node:fs";
import { join } from "node:path";

const dir = join(import.meta.dirname, "..", "template");
const lockPath = join(dir, "package-lock.json");
rmSync(lockPath, { force: true });
execFileSync("npm", ["install", "--package-lock-only", "--no-audit", "--no-fund"], { cwd: dir, stdio: "inherit" });

// Platform constraints of the optional native packages, from their package.json.
const PLATFORMS = {
  "android-arm64": { os: ["android"], cpu: ["arm64"] },
  "darwin-arm64": { os: ["darwin"], cpu: ["arm64"] },
  "darwin-x64": { os: ["darwin"], cpu: ["x64"] },
  "freebsd-x64": { os: ["freebsd"], cpu: ["x64"] },
  "linux-arm-gnueabihf": { os: ["linux"], cpu: ["arm"] },
  "linux-arm64-gnu": { os: ["linux"], cpu: ["arm64"] },
  "linux-arm64-musl": { os: ["linux"], cpu: ["arm64"] },
  "linux-x64-gnu": { os: ["linux"], cpu: ["x64"] },
  "linux-x64-musl": { os: ["linux"], cpu: ["x64"] },
  "wasm32-wasi": { cpu: ["wasm32"] },
  "win32-arm64-msvc": { os: ["win32"], cpu: ["arm64"] },
  "win32-x64-msvc": { os: ["win32"], cpu: ["x64"] },
};

const lock = JSON.parse(readFileSync(lockPath, "utf8"));
let added = 0;
for (const [path, entry] of Object.entries(lock.packages)) {
  for (const [name, version] of Object.entries(entry.optionalDependencies ?? {})) {
    const key = `node_modules/${name}`;
    if (lock.packages[key]) continue;
    const suffix = Object.keys(PLATFORMS).find((p) => name.endsWith(`-${p}`));
    if (!suffix) throw new Error(`${path} has optional ${name} with no known platform: add it to PLATFORMS`);
    lock.packages[key] = { version, dev: entry.dev, optional: true, ...PLATFORMS[suffix] };
    added++;
  }
}
writeFileSync(lockPath, JSON.stringify(lock, null, 2) + "\n");
console.log(`lockfile written; ${added} platform-only optional packages recorded as stubs`);
