#!/usr/bin/env bash
# The newcomer path: create .venv if needed (Debian/Ubuntu's Python is "externally managed",
# PEP 668: `pip install` outside a venv is refused), install segmentflow into it, run the demo.
# Arguments go to `segmentflow demo` (e.g. --customers 100). Exit code: the demo's.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
VENV="${SEGMENTFLOW_VENV:-$ROOT/.venv}"
if ! command -v "$PY" >/dev/null 2>&1; then
    echo "demo.sh: $PY not found; install Python 3.11+ (or set PYTHON=/path/to/python3)" >&2
    exit 1
fi
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "demo.sh: segmentflow needs Python 3.11+, $PY is $("$PY" -V 2>&1)" >&2
    exit 1
fi
if [[ ! -x "$VENV/bin/python" ]]; then
    echo "demo.sh: creating $VENV"
    if ! "$PY" -m venv "$VENV"; then
        rm -rf "$VENV"
        echo "demo.sh: could not create a venv. On Debian/Ubuntu: sudo apt-get install python3-venv" >&2
        exit 1
    fi
fi
if [[ ! -x "$VENV/bin/segmentflow" ]]; then
    echo "demo.sh: installing segmentflow into $VENV (first run only)"
    "$VENV/bin/python" -m pip install --quiet -e "$ROOT"
fi
exec "$VENV/bin/segmentflow" demo "$@"
