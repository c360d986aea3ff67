#!/usr/bin/env bash
# Installs the Debian packages of the real servers and tools the test suite starts, when missing.
set -euo pipefail
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
# command on PATH (or absolute path) -> Debian package that provides it
declare -A wanted=(
    [promtool]=prometheus            # `promtool test rules` over deploy/prometheus/alerts.yml
    [chromium]=chromium              # the dashboard's browser test (headless)
    [chromedriver]=chromium-driver   # ... driven through Selenium
    # tests/pg_cluster.py: a PostgreSQL 15 primary and streaming replicas. Debian keeps the server
    # binaries off PATH, hence absolute paths (`command -v` accepts an executable's path).
    [/usr/lib/postgresql/15/bin/initdb]=postgresql-15
    [/usr/lib/postgresql/15/bin/pg_basebackup]=postgresql-client-15
    [redis-server]=redis-server      # tests/cache_servers.py: the Redis cache, pub/sub and rate limits
    [memcached]=memcached            # ... and the Memcached cache and rate limits
)
missing=()
for cmd in "${!wanted[@]}"; do
    command -v "$cmd" >/dev/null 2>&1 || missing+=("${wanted[$cmd]}")
done
if [ "${#missing[@]}" -gt 0 ]; then
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}"
fi
