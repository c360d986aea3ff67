#!/usr/bin/env bash
# Quick start: runs Tally on an embedded SQLite file (./tally.db). Extra arguments go to `tally serve`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/bootstrap.sh" runtime
exec "$root/.venv/bin/tally" serve "$@"
