#!/usr/bin/env bash
# Runs the whole test suite. Installs what it needs first: the virtual environment with the locked
# development dependencies, and the Debian packages of the real servers the tests start.
# Extra arguments go to pytest. Tests run in TALLY_TEST_PROCESSES processes (pytest-xdist, default
# 2): most of a test's time is spent waiting on servers and disks, not on the CPU.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/bootstrap.sh" dev
"$root/scripts/system-packages.sh"
cd "$root"
exec "$root/.venv/bin/python" -m pytest -n "${TALLY_TEST_PROCESSES:-2}" "$@"
