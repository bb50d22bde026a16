#!/usr/bin/env bash
# Install Debian packages: `bash devtools/apt-install.sh PACKAGE...`. As root, or through
# passwordless sudo; otherwise it names the packages to install by hand and exits 1.
# devtools/system-deps.sh and bench/peers/node/install.sh call it for what they miss.
set -euo pipefail

[ $# -gt 0 ] || { echo "usage: $0 PACKAGE..." >&2; exit 2; }
echo "installing $* (Debian packages)"
if [ "$(id -u)" -eq 0 ]; then SUDO=(); elif sudo -n true 2>/dev/null; then SUDO=(sudo -n); else
  echo "error: need $*; install them (apt-get install $*) and retry" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
timeout 600 "${SUDO[@]}" apt-get update -qq
timeout 900 "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "$@"
