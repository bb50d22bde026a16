#!/usr/bin/env bash
# Install Node.js 20+ and npm (Debian's packages, when missing or older than v20) and the Node
# benchmark peers: `npm ci` from package-lock.json, then `npm run build` (tsc into dist/).
# NestJS 11 declares node >= 20 (npm ci only warns), so an older Node.js, Debian 12's 18
# included, is refused: exit 1 with what to install.
# Quick when done already: npm ci runs only when node_modules was not installed from this
# lock file (a stamp holds the lock's sha256), the build only when a source is newer than
# dist/. Prints one line at the end: the versions of node, npm, @nestjs/core and kafkajs.
# Installs Debian's packages when we may (root or passwordless sudo) with
# devtools/apt-install.sh, as devtools/system-deps.sh does.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$here"
node_min=20

node_major() {
  local version
  version=$(node --version 2>/dev/null) || return 1
  version=${version#v}
  echo "${version%%.*}"
}

node_ok() {
  command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || return 1
  [ "$(node_major)" -ge "$node_min" ] 2>/dev/null
}

if ! node_ok; then
  bash "$here/../../../devtools/apt-install.sh" nodejs npm ||
    { echo "error: need Node.js $node_min+ and npm" >&2; exit 1; }
  if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "error: Node.js and npm still not available" >&2
    exit 1
  fi
  if ! node_ok; then
    echo "error: Node.js $(node --version) is older than $node_min, which NestJS 11 needs" \
      "(Debian 12's nodejs is 18): install Node.js $node_min or newer and retry" >&2
    exit 1
  fi
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
