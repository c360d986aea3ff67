#!/usr/bin/env bash
# Quick start: runs Tally on an embedded SQLite file (./tally.db). Extra arguments go to `tally serve`.
# The schema is brought forward first (`tally db upgrade`: expand revisions only, ADR 0031), so an
# ./tally.db made by an older Tally keeps working; `tally db contract` is never run from here.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/bootstrap.sh" runtime
upgrade=(db upgrade)
args=("$@")
for i in "${!args[@]}"; do  # the database `tally serve` is given is the one to upgrade
  case "${args[$i]}" in
    --database-url=*) upgrade+=("${args[$i]}") ;;
    --database-url) upgrade+=(--database-url "${args[$((i + 1))]:-}") ;;
  esac
done
"$root/.venv/bin/tally" "${upgrade[@]}"
exec "$root/.venv/bin/tally" serve "$@"
