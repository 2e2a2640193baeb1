#!/usr/bin/env bash
# mypy --strict over the package as it is installed (segmentflow + schemas/, segmenters/,
# streams/ mapped to segmentflow.schemas etc.). The editable install maps those folders with an
# import hook that mypy cannot follow, so type-check a symlink tree laid out like the package.
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
exit "$RC"
