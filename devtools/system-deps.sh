#!/usr/bin/env bash
# Make sure Java 17+ (to run Kafka) and Maven (to fetch Kafka's jars) are installed.
# Installs Debian's packages when they are missing and we may (root or passwordless sudo).
set -euo pipefail

java_ok() {
  command -v java >/dev/null 2>&1 || return 1
  local major
  major=$(java -XshowSettings:properties -version 2>&1 | awk -F'= ' '/java.specification.version/ {print $2}')
  [ "${major%%.*}" -ge 17 ] 2>/dev/null
}

missing=()
java_ok || missing+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || missing+=(maven)
[ ${#missing[@]} -eq 0 ] && exit 0

echo "installing ${missing[*]} (Debian packages)"
if [ "$(id -u)" -eq 0 ]; then SUDO=(); elif sudo -n true 2>/dev/null; then SUDO=(sudo -n); else
  echo "error: need ${missing[*]}; install them (apt-get install ${missing[*]}) and retry" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
timeout 600 "${SUDO[@]}" apt-get update -qq
timeout 900 "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
java_ok || { echo "error: Java 17+ still not available" >&2; exit 1; }
