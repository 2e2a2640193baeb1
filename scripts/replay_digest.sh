#!/usr/bin/env bash
# SHA-256 of `segmentflow replay` output on CDNOW and the synthetic benchmark sets, default and
# example configs: run before and after a refactor that must keep replay byte-identical.
# Usage: bash scripts/replay_digest.sh [WORKDIR]   (data files are generated once into WORKDIR)
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-.venv/bin/python}
work=${1:-/tmp/segmentflow-digest}
mkdir -p "$work"
[ -s "$work/cdnow.jsonl" ] || "$py" benchmarks/population_data.py cdnow "$work/cdnow.jsonl" >/dev/null
[ -s "$work/syn900.jsonl" ] || "$py" -m segmentflow.synthetic "$work/syn900.jsonl" --customers 900 --seed 7 >/dev/null
[ -s "$work/syn2k.jsonl" ] || "$py" -m segmentflow.synthetic "$work/syn2k.jsonl" --customers 2000 --seed 3 --days 365 --scale 0.5 >/dev/null
for data in cdnow syn900 syn2k; do
  case $data in cdnow) until=1998-12-31T00:00:00Z ;; *) until=2026-12-31T00:00:00Z ;; esac
  for cfg in default example; do
    # the example rules never match CDNOW (identical output), so CDNOW runs the default only
    if [ "$data" = cdnow ] && [ "$cfg" = example ]; then continue; fi
    if [ "$cfg" = example ]; then export SEGMENTFLOW_CONFIG=config/segmentflow.example.yaml; else unset SEGMENTFLOW_CONFIG; fi
    out="$work/$data.$cfg.changes.jsonl"
    "$py" -m segmentflow.cli.main replay "$work/$data.jsonl" --until "$until" \
      --changes-out "$out" --quiet
    printf '%s %s %s\n' "$(sha256sum "$out" | cut -c1-16)" "$(wc -l <"$out")" "$data.$cfg"
  done
done
