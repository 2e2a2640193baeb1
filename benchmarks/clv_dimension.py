"""Per-event cost of the ``clv`` dimension (issue 16): ``replay`` of the same events with the
default config and with the dimension enabled, in one run (best of ``--repeat``).

Events: CDNOW (all 23,570 customers, from the installed ``lifetimes`` wheel through
``population_data.py``) when available, else the committed 2,357-customer sample; plus a
synthetic stream (``segmentflow.synthetic``) whose orders sit among website and email events.

    .venv/bin/python benchmarks/clv_dimension.py [--repeat 3] [--synthetic 2000]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from population_data import cdnow_lines, cdnow_path  # noqa: E402

from segmentflow.config import config_from_dict  # noqa: E402
from segmentflow.schemas.timefmt import parse_rfc3339  # noqa: E402
from segmentflow.service.replay import replay_events  # noqa: E402
from segmentflow.state.memory import MemoryStore  # noqa: E402

FIXTURE = ROOT / "tests" / "fixtures" / "cdnow" / "CDNOW_sample.txt"
CLV = {"class": "segmentflow.segmenters.clv:Clv"}


def cdnow_events() -> tuple[str, list[dict[str, Any]]]:
    if cdnow_path() is not None:
        return "CDNOW (23,570 customers)", [orjson.loads(x) for x in cdnow_lines()]
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        master = Path(tmp) / "master.txt"
        rows = (line.split() for line in FIXTURE.read_text().splitlines())
        master.write_text("".join(f"{r[0]} {r[2]} {r[3]} {r[4]}\n" for r in rows))
        return "CDNOW sample (2,357)", [orjson.loads(x) for x in cdnow_lines(master)]


def synthetic_events(customers: int) -> list[dict[str, Any]]:
    from datetime import UTC, datetime

    from segmentflow.synthetic import generate

    messages = generate(customers, 7, datetime(2026, 1, 5, tzinfo=UTC), 180)
    return [m.event for m in messages if m.event is not None and not m.duplicate]


def best(events: Sequence[dict[str, Any]], config: dict[str, Any], repeat: int) -> float:
    cfg = config_from_dict(config)
    until = parse_rfc3339(str(events[-1]["timestamp"]))
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        replay_events(events, cfg, until, MemoryStore())
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--synthetic", type=int, default=2000, help="synthetic customers")
    args = ap.parse_args()
    from rich.console import Console
    from rich.table import Table

    table = Table(title="replay with and without the clv dimension (best of runs)")
    for col in ("events", "n", "default s", "+clv s", "ratio", "clv µs/event", "µs/order"):
        table.add_column(col, justify="left" if col == "events" else "right")
    sets = [cdnow_events(), (f"synthetic ({args.synthetic:,})", synthetic_events(args.synthetic))]
    base_cfg: dict[str, Any] = {"persona": {"enabled": False}}
    for name, events in sets:
        orders = sum(1 for e in events if e["type"] == "order_completed")
        base = best(events, base_cfg, args.repeat)
        with_clv = best(events, base_cfg | {"dimensions": [CLV]}, args.repeat)
        extra = (with_clv - base) * 1e6
        table.add_row(
            name,
            f"{len(events):,}",
            f"{base:.2f}",
            f"{with_clv:.2f}",
            f"{with_clv / base:.2f}x",
            f"{extra / len(events):.1f}",
            f"{extra / max(orders, 1):.1f}",
        )
    Console(width=150).print(table)


if __name__ == "__main__":
    main()
