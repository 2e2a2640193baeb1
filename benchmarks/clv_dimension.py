"""Per-event cost of the ``clv`` and ``interest`` dimensions (issue 16), and interest accuracy.

- hooks: the dimension's own ``observe`` + ``evaluate`` per event, over decoded events with one
  state per customer (a stub ``emit``), minus the same loop without the dimension: robust to a
  busy machine;
- replay: ``replay`` with the default config and with the dimension, in one run (best of
  ``--repeat``), the end-to-end ratio (noisy when the machine is shared);
- accuracy: share of synthetic customers (``preferences=True``) whose final ``interest`` value
  is their generated preferred category.

Events: CDNOW (all 23,570 customers, from the installed ``lifetimes`` wheel through
``population_data.py``) when available, else the committed 2,357-customer sample; plus a
synthetic stream (``segmentflow.synthetic``) whose orders sit among website and email events.

    .venv/bin/python benchmarks/clv_dimension.py [--repeat 3] [--synthetic 2000] [--no-replay]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from population_data import cdnow_lines, cdnow_path  # noqa: E402
from rich.table import Table  # noqa: E402

from segmentflow.config import config_from_dict  # noqa: E402
from segmentflow.engine.state import CustomerState  # noqa: E402
from segmentflow.schemas.decode import Event, Limits  # noqa: E402
from segmentflow.schemas.timefmt import parse_rfc3339  # noqa: E402
from segmentflow.segmenters.dimension import Dimension, Emit, Moment  # noqa: E402
from segmentflow.service.replay import events_from_dicts, replay_events  # noqa: E402
from segmentflow.state.memory import MemoryStore  # noqa: E402

FIXTURE = ROOT / "tests" / "fixtures" / "cdnow" / "CDNOW_sample.txt"
CLV = {"class": "segmentflow.segmenters.clv:Clv"}
INTEREST = {"class": "segmentflow.segmenters.interest:Interest"}


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

    messages = generate(customers, 7, datetime(2026, 1, 5, tzinfo=UTC), 180, preferences=True)
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


def hook_cost(dim: Dimension, events: Sequence[Event], repeat: int) -> float:
    """µs per event of ``observe`` + ``evaluate`` (loop overhead subtracted)."""

    def record(state: CustomerState, dimension: str, value: str, at: Moment, *_: Any) -> Any:
        state.values[dimension] = value
        return None

    emit = cast(Emit, record)  # records the value only: the engine's bookkeeping is not timed

    def loop(call: bool) -> float:
        states: dict[str, CustomerState] = {}
        started = time.perf_counter()
        for event in events:
            state = states.get(event.customer_id)
            if state is None:
                state = states[event.customer_id] = CustomerState(event.customer_id)
            if call:
                dim.observe(state, event, event.ts)
                dim.evaluate(state, Moment(event.ts, event.event_id, event), emit)
        return time.perf_counter() - started

    spent = min(loop(True) for _ in range(repeat)) - min(loop(False) for _ in range(repeat))
    return spent / len(events) * 1e6


def accuracy(customers: int) -> float:
    from datetime import UTC, datetime

    from segmentflow.synthetic import generate, preference_of

    messages = generate(customers, 7, datetime(2026, 1, 5, tzinfo=UTC), 180, preferences=True)
    events = [m.event for m in messages if m.event is not None and not m.duplicate]
    cfg = config_from_dict({"persona": {"enabled": False}, "dimensions": [INTEREST]})
    out = [c["data"] for c in replay_events(events, cfg, None, MemoryStore())]
    final = {c["customer_id"]: c["current"] for c in out if c["dimension"] == "interest"}
    return float(sum(v == preference_of(c, 7) for c, v in final.items())) / max(len(final), 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--synthetic", type=int, default=2000, help="synthetic customers")
    ap.add_argument("--no-replay", action="store_true", help="hooks and accuracy only")
    args = ap.parse_args()
    from rich.console import Console

    from segmentflow.segmenters.clv import Clv, ClvParams
    from segmentflow.segmenters.interest import Interest, InterestParams

    console = Console(width=150)
    limits = Limits()
    sets = [cdnow_events(), (f"synthetic ({args.synthetic:,})", synthetic_events(args.synthetic))]
    hooks = Table(title="dimension hooks: µs per event (observe + evaluate)")
    for col in ("events", "n", "orders", "clv µs/event", "interest µs/event"):
        hooks.add_column(col, justify="left" if col == "events" else "right")
    for name, rows in sets:
        decoded = list(events_from_dicts(rows, limits))
        orders = sum(1 for e in decoded if e.type == "order_completed")
        clv = hook_cost(Clv(ClvParams()), decoded, args.repeat)
        interest = hook_cost(Interest(InterestParams()), decoded, args.repeat)
        hooks.add_row(name, f"{len(decoded):,}", f"{orders:,}", f"{clv:.2f}", f"{interest:.2f}")
    console.print(hooks)
    share = accuracy(args.synthetic)
    console.print(f"interest accuracy ({args.synthetic:,} synthetic customers): {share:.1%}")
    if args.no_replay:
        return
    table = Table(title="replay with and without each dimension (best of runs)")
    for col in ("events", "n", "default s", "+clv s", "+interest s"):
        table.add_column(col, justify="left" if col == "events" else "right")
    base_cfg: dict[str, Any] = {"persona": {"enabled": False}}
    for name, rows in sets:
        base = best(rows, base_cfg, args.repeat)
        with_clv = best(rows, base_cfg | {"dimensions": [CLV]}, args.repeat)
        with_interest = best(rows, base_cfg | {"dimensions": [INTEREST]}, args.repeat)
        table.add_row(
            name,
            f"{len(rows):,}",
            f"{base:.2f}",
            f"{with_clv:.2f} ({with_clv / base:.2f}x)",
            f"{with_interest:.2f} ({with_interest / base:.2f}x)",
        )
    console.print(table)


if __name__ == "__main__":
    main()
