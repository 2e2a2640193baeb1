#!/usr/bin/env bash
# mypy --strict over the package as it is installed (segmentflow + schemas/, segmenters/,
# streams/ mapped to segmentflow.schemas etc.), then over tests/, benchmarks/ and scripts/. The
# editable install maps those folders with an import hook that mypy cannot follow, so
# type-check a symlink tree laid out like the package.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
TREE="$(mktemp -d "${TMPDIR:-/tmp}/segmentflow-mypy.XXXXXX")"
trap 'rm -rf "$TREE"' EXIT
mkdir "$TREE/segmentflow"
for entry in "$ROOT"/segmentflow/*; do
    [[ "$(basename "$entry")" == "__pycache__" ]] && continue
    ln -s "$entry" "$TREE/segmentflow/"
done
ln -s "$ROOT/schemas" "$TREE/segmentflow/schemas"
ln -s "$ROOT/segmenters" "$TREE/segmentflow/segmenters"
ln -s "$ROOT/streams" "$TREE/segmentflow/streams"
set +e
(cd "$TREE" && "$VENV/bin/mypy" --config-file "$ROOT/pyproject.toml" \
    --cache-dir "$ROOT/.mypy_cache" -p segmentflow) \
    | sed -E 's#^segmentflow/(schemas|segmenters|streams)/#\1/#'
RC=${PIPESTATUS[0]}

# Tests, benchmarks and scripts, --strict too (pyproject's [tool.mypy] and its overrides). The
# import paths are pytest's and the scripts' own: the package tree, tests/ (``support``,
# ``reference``), the collector harness folder and benchmarks/ (``population_data``). Folders
# without __init__.py make every conftest.py a module named ``conftest``: the nested ones are
# checked one per run.
export MYPYPATH="$TREE:$ROOT/tests:$ROOT/tests/integration/collector:$ROOT/benchmarks"
NESTED=(tests/integration/collector/conftest.py tests/integration/triggers/conftest.py)
mapfile -t SOURCES < <(cd "$ROOT" && find tests benchmarks scripts -name '*.py' \
    ! -path tests/integration/collector/conftest.py \
    ! -path tests/integration/triggers/conftest.py | sort)
for group in "${SOURCES[*]}" "${NESTED[@]}"; do
    # shellcheck disable=SC2086  # a group is a list of paths without spaces
    # the package's own errors were reported above: only these files' errors here
    (cd "$ROOT" && "$VENV/bin/mypy" --config-file pyproject.toml --cache-dir .mypy_cache \
        --follow-imports=silent $group)
    STEP=$?
    [[ $STEP -ne 0 ]] && RC=$STEP
done
exit "$RC"
