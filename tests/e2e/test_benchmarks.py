"""``benchmarks/run.py`` runs end to end on a tiny input and reports every figure of issue 7.

No timing is asserted: only that each figure is there (a number where one is expected).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value >= 0


def _run_tiny(script: str, tmp_path: Path, *options: str) -> tuple[str, dict[str, Any]]:
    """Run ``benchmarks/<script> --tiny [options] --json OUT``: its stdout and its JSON."""
    out = tmp_path / "out.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "--tiny", *options, "--json", str(out)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout, json.loads(out.read_text())


def test_benchmark_tiny_writes_every_figure(tmp_path: Path) -> None:
    stdout, r = _run_tiny("run.py", tmp_path, "--silent")
    assert "segmentflow benchmarks" in stdout  # the table

    assert r["data"]["events"] > 0
    # 1. worker end to end vs the Faust no-op agent
    for key in ("faust_noop", "worker_1"):
        assert _number(r[key]["eps"]) and r[key]["eps"] > 0, key
    assert r["worker_1"]["applied"] >= r["data"]["events"]
    assert _number(r["ratios"]["worker_vs_faust_noop"])
    # 2. engine in-process, MemoryStore per dimension and RedisStore
    inproc = r["inproc"]
    assert set(inproc["engine_eps"]) == {"lifecycle", "+rfm", "+persona", "+3 rules"}
    assert all(_number(v) and v > 0 for v in inproc["engine_eps"].values())
    assert _number(inproc["engine_redis_eps"]) and _number(inproc["decode_eps"])
    # 3. replay
    assert _number(inproc["replay_eps"]) and inproc["replay_changes"] > 0
    # 4. latency
    lat = r["latency"]
    assert lat["produced"] > 0 and lat["changes_timed"] > 0
    assert _number(lat["p50_ms"]) and _number(lat["p99_ms"]) and lat["p50_ms"] <= lat["p99_ms"]
    # 5. Redis bytes per customer
    mem = inproc["memory"]
    for key in ("state_key", "due_share", "rfm_hash_share", "bytes_per_customer", "mb_at_1m"):
        assert _number(mem[key]) and mem[key] > 0, key
    # 6. two workers vs one
    assert _number(r["worker_2"]["eps"]) and _number(r["ratios"]["two_workers_vs_one"])


def test_population_benchmark_tiny_reports_every_figure(tmp_path: Path) -> None:
    """``benchmarks/population.py --tiny``: the population axis (issue 13) without CDNOW."""
    stdout, r = _run_tiny("population.py", tmp_path)
    assert "population benchmarks" in stdout
    (size,) = r["sizes"]
    assert size["customers"] == 1000 and size["events"] > 1000
    for key in (
        "replay_eps",
        "sweep_s",
        "idle_sweep_s",
        "scoring_s",
        "rank_arrays_bytes_per_customer",
        "state_bytes_per_customer",
    ):
        assert _number(size[key]), key
    gap = size["gap"]
    assert _number(gap["advance_s"]) and gap["days"] >= 365 and gap["changes"] > 0
    assert gap["sweeps"] < 10  # not one per day of silence
    assert _number(r["heavy"]["replay_eps"]) and r["heavy"]["replay_eps"] > 0


def test_redis_bytes_tiny_reports_every_kind(tmp_path: Path) -> None:
    """``benchmarks/redis_bytes.py --tiny``: Redis bytes per customer by key kind (issue 13)."""
    stdout, r = _run_tiny("redis_bytes.py", tmp_path)
    assert "Redis bytes per customer" in stdout
    runs = r["runs"]
    assert [(run["data"], run["customers"]) for run in runs] == [
        ("cdnow-like", 1000),
        ("cdnow-like", 2000),
        ("cdnow-like via Processor", 1000),  # the cross-check through the worker's path
    ]
    for run in runs:
        assert run["keys"]["state"] == run["customers"]
        for kind in ("state", "due", "rfm", "rfm_log", "directory", "members"):
            assert _number(run["per_customer"][kind]) and run["per_customer"][kind] > 0, kind
        assert _number(run["used_memory_delta_per_customer"])
        assert run["dedup_ids_per_customer"] >= 1  # issue 9's kept event-id hashes
