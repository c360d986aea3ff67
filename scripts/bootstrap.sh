#!/usr/bin/env bash
# Creates .venv and installs the locked dependencies into it. Sourced by serve.sh and test.sh.
# Usage: bootstrap.sh runtime|dev
# Re-runs are cheap: the install is skipped while the lock file is unchanged.
set -euo pipefail
profile="${1:-runtime}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
lock="$root/requirements/$profile.lock"
python="${PYTHON:-python3}"

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "Tally needs Python 3.11 or newer as '$python'." >&2
    exit 1
fi
if [ ! -x "$venv/bin/python" ]; then
    if ! "$python" -m venv "$venv" 2>/dev/null; then
        # Debian splits venv/ensurepip out of the interpreter package.
        rm -rf "$venv"
        ver="$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
        as_root apt-get update -qq
        as_root apt-get install -y -qq "python$ver-venv" || as_root apt-get install -y -qq python3-venv
        "$python" -m venv "$venv"
    fi
fi
stamp="$venv/.installed-$profile"
digest="$(cat "$lock" "$root/pyproject.toml" | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$digest" ]; then
    "$venv/bin/python" -m pip install -q --disable-pip-version-check --require-hashes -r "$lock"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps -e "$root"
    echo "$digest" > "$stamp"
fi
