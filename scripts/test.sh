#!/usr/bin/env bash
# The whole check, one command on a fresh checkout:  bash scripts/test.sh [pytest args...]
#   1. creates .venv with Python 3.11 and installs segmentflow[dev] (editable) when needed,
#   2. ruff check, ruff format --check,
#   3. mypy --strict over the package as it is installed (segmentflow + schemas/, segmenters/,
#      streams/ mapped to segmentflow.schemas etc.), then tests/, benchmarks/, scripts/,
#   4. pytest (unit, integration and e2e; integration tests start Tansu/Redis themselves).
# Environment: PYTHON=/path/to/python3.11 to choose the interpreter; SKIP_INSTALL=1 to skip step 1;
# SEGMENTFLOW_TEST_WORKERS=N test processes (default 2, 0 = none).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"

step() { printf '\n==> %s\n' "$*"; }

# --- 1. environment ---------------------------------------------------------------------------
if [[ "${SKIP_INSTALL:-0}" != "1" ]]; then
    if [[ ! -x "$PY" ]]; then
        BASE_PY="${PYTHON:-$(command -v python3.11 || true)}"
        if [[ -z "$BASE_PY" ]]; then
            echo "error: Python 3.11 not found; install it or run: PYTHON=/path/to/python3.11 bash scripts/test.sh" >&2
            exit 1
        fi
        step "creating .venv with $BASE_PY"
        "$BASE_PY" -m venv "$VENV"
    fi
    STAMP="$VENV/.segmentflow-dev-installed"
    if [[ ! -f "$STAMP" || pyproject.toml -nt "$STAMP" ]] \
        || ! "$PY" -c "import segmentflow.streams, pytest, mypy" >/dev/null 2>&1; then
        step "installing segmentflow[dev] into .venv"
        "$PY" -m pip install --quiet --upgrade pip
        "$PY" -m pip install --quiet -e '.[dev]'
        touch "$STAMP"
    fi
fi

# --- 2. lint and format ---------------------------------------------------------------------
step "ruff check"
"$VENV/bin/ruff" check .
step "ruff format --check"
"$VENV/bin/ruff" format --check .

# --- 3. types ---------------------------------------------------------------------------------
step "mypy --strict (package segmentflow, tests, benchmarks, scripts)"
bash "$ROOT/scripts/typecheck.sh"

# --- 4. tests -----------------------------------------------------------------------------------
step "pytest"
set +e
# two test processes (pytest-xdist, work stealing): most integration and e2e time is waiting on
# brokers, workers and rebalances, so a second process nearly halves the wall time on 2 cores;
# SEGMENTFLOW_TEST_WORKERS=0 runs everything in this process
"$PY" -m pytest -q -n "${SEGMENTFLOW_TEST_WORKERS:-2}" --dist worksteal "$@"
RC=$?
set -e
if [[ $RC -eq 5 ]]; then
    echo "error: pytest collected no tests" >&2
fi
exit $RC
