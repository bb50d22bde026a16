#!/usr/bin/env bash
# Make sure Java 17+ (to run Kafka), Maven (to fetch Kafka's jars), the PostgreSQL server
# binaries (initdb, postgres: the store's PostgreSQL tests run a throwaway server), the Redis
# server (redis-server and redis-cli: the shared rate limit's tests run a throwaway server) and
# Chromium (the docs page's browser test drives it headless through Playwright) are installed.
# Installs Debian's packages when they are missing and we may (root or passwordless sudo;
# devtools/apt-install.sh).
set -euo pipefail

java_ok() {
  command -v java >/dev/null 2>&1 || return 1
  local major
  major=$(java -XshowSettings:properties -version 2>&1 | awk -F'= ' '/java.specification.version/ {print $2}')
  [ "${major%%.*}" -ge 17 ] 2>/dev/null
}

postgres_ok() {
  # Debian's layout (/usr/lib/postgresql/<version>/bin), else where pg_config or PATH points.
  local dirs=(/usr/lib/postgresql/*/bin) dir tool
  dirs+=("$(pg_config --bindir 2>/dev/null || true)")
  command -v postgres >/dev/null 2>&1 && dirs+=("$(dirname "$(readlink -f "$(command -v postgres)")")")
  for dir in "${dirs[@]}"; do
    for tool in initdb postgres pg_isready psql; do [ -x "$dir/$tool" ] || continue 2; done
    return 0
  done
  return 1
}

redis_ok() {
  command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1
}

missing=()
java_ok || missing+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || missing+=(maven)
postgres_ok || missing+=(postgresql)
redis_ok || missing+=(redis-server)
# Debian's build: the tests never run `playwright install`, which downloads a browser of its own.
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ ${#missing[@]} -eq 0 ] && exit 0

bash "$(dirname "${BASH_SOURCE[0]}")/apt-install.sh" "${missing[@]}"
java_ok || { echo "error: Java 17+ still not available" >&2; exit 1; }
postgres_ok || { echo "error: PostgreSQL server binaries still not available" >&2; exit 1; }
redis_ok || { echo "error: redis-server and redis-cli still not available" >&2; exit 1; }
[ -x /usr/bin/chromium ] || { echo "error: /usr/bin/chromium still not available" >&2; exit 1; }
