#!/usr/bin/env bash
# Install Node.js and npm (Debian's packages, when missing or older than v18) and the Node
# benchmark peers: `npm ci` from package-lock.json, then `npm run build` (tsc into dist/).
# Quick when done already: npm ci runs only when node_modules was not installed from this
# lock file (a stamp holds the lock's sha256), the build only when a source is newer than
# dist/. Prints one line at the end: the versions of node, npm, @nestjs/core and kafkajs.
# Installs Debian's packages when we may (root or passwordless sudo), like devtools/system-deps.sh.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$here"

node_major() {
  local version
  version=$(node --version 2>/dev/null) || return 1
  version=${version#v}
  echo "${version%%.*}"
}

node_ok() {
  command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || return 1
  [ "$(node_major)" -ge 18 ] 2>/dev/null
}

if ! node_ok; then
  missing=(nodejs npm)
  echo "installing ${missing[*]} (Debian packages)"
  if [ "$(id -u)" -eq 0 ]; then SUDO=(); elif sudo -n true 2>/dev/null; then SUDO=(sudo -n); else
    echo "error: need Node.js 18+ and npm; install them (apt-get install ${missing[*]}) and retry" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  timeout 600 "${SUDO[@]}" apt-get update -qq
  timeout 900 "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
  node_ok || { echo "error: Node.js 18+ and npm still not available" >&2; exit 1; }
fi
if [ "$(node_major)" -lt 20 ]; then
  # Debian 12 ships Node.js 18; NestJS 11 declares node >= 20 (npm ci only warns).
  echo "warning: Node.js $(node --version): NestJS 11 asks for 20 or newer" >&2
fi

stamp=node_modules/.bench-lock-sha256
lock_sum=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$lock_sum" ]; then
  timeout 900 npm ci --no-audit --no-fund --loglevel=error
  echo "$lock_sum" >"$stamp"
fi

# Build when dist/ is missing or older than a source or the compiler's settings.
if [ ! -f dist/main.js ] || [ -n "$(find src tsconfig.json package-lock.json -newer dist/main.js -print -quit)" ]; then
  rm -rf dist
  timeout 300 npm run --silent build
fi

package_version() {
  node -p "require('./node_modules/$1/package.json').version"
}
echo "node $(node --version | sed 's/^v//') npm $(npm --version) @nestjs/core $(package_version @nestjs/core) kafkajs $(package_version kafkajs)"
