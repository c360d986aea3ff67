#!/usr/bin/env bash
# Installs the Debian packages of the real servers and tools the test suite starts, when missing.
set -euo pipefail
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
# command on PATH (or absolute path) -> Debian package that provides it
declare -A wanted=(
    [promtool]=prometheus            # `promtool test rules` over deploy/prometheus/alerts.yml
    [chromium]=chromium              # the dashboard's browser test (headless)
    [chromedriver]=chromium-driver   # ... driven through Selenium
)
missing=()
for cmd in "${!wanted[@]}"; do
    command -v "$cmd" >/dev/null 2>&1 || missing+=("${wanted[$cmd]}")
done
if [ "${#missing[@]}" -gt 0 ]; then
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}"
fi
