"""``benchmarks/cluster_scaling.py --quick`` runs end to end (one worker on one Redis, one on a
3-primary Redis Cluster) and reports its figures. No timing is asserted: only that every
configuration applied the whole backlog and has a number where one is expected."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
#: overall limit of the run (a loaded machine; an idle one needs ~30 s)
LIMIT_S = 600


def test_cluster_scaling_quick_reports_both_backends(tmp_path: Path) -> None:
    out = tmp_path / "cluster.json"
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "cluster_scaling.py"),
            "--quick",
            "--json",
            str(out),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=LIMIT_S,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| backend | workers |" in done.stdout  # the table
    assert "not a speed-up" in done.stdout or "compare the ratios" in done.stdout
    report = json.loads(out.read_text())
    rows = report["rows"]
    assert [(r["backend"], r["workers"]) for r in rows] == [("single", 1), ("cluster", 1)]
    for r in rows:
        assert r["events"] == report["events"] > 0
        assert r["eps_from_start"] > 0 and r["wall_s"] > 0
        assert r["bytes_per_customer"] > 0 and r["state_bytes"] > 0
    assert rows[0]["ratio"] == 1.0
    assert len(rows[1]["keys_per_node"]) == 3 and all(n > 0 for n in rows[1]["keys_per_node"])
