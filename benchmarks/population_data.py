"""Event files for the population axis of the benchmarks (issue 13): real CRM shapes.

- :func:`cdnow_lines`: the CDNOW purchase history (23,570 customers, 69,659 orders, 1997-98) as
  CONTRACT §2 ``order_completed`` events, read at run time from the dataset file of the installed
  ``lifetimes`` wheel (``pip install lifetimes``; no network);
- :func:`cdnow_like_lines`: many customers, 1-10 orders each (most buy once, as in CDNOW), over
  18 months, at any population size; deterministic;
- :func:`with_gap`: the same events with a year of silence in event time inserted in the middle.

Usage::

    .venv/bin/python benchmarks/population_data.py cdnow OUT.jsonl
    .venv/bin/python benchmarks/population_data.py like 100000 OUT.jsonl [--gap-days 365]
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from importlib.util import find_spec
from pathlib import Path

import orjson

DAY_US = 86_400_000_000
#: the CDNOW-like window starts where CDNOW starts
START_US = int(datetime(1997, 1, 1, tzinfo=UTC).timestamp() * 1_000_000)


def cdnow_path() -> Path | None:
    """``CDNOW_master.txt`` inside the installed ``lifetimes`` wheel, or ``None``."""
    spec = find_spec("lifetimes")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "datasets" / "CDNOW_master.txt"
    return path if path.is_file() else None


def _timestamp(us: int) -> str:
    seconds, micros = divmod(us, 1_000_000)
    text = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{text}.{micros:06d}Z" if micros else f"{text}Z"


def _order(n: int, customer: str, ts: int, revenue: float) -> tuple[int, bytes]:
    event = {
        "event_id": f"o-{n}",
        "customer_id": customer,
        "type": "order_completed",
        "timestamp": _timestamp(ts),
        "properties": {"order_id": f"o-{n}", "revenue": round(revenue, 2), "currency": "USD"},
    }
    return ts, orjson.dumps(event)


def cdnow_lines(path: Path | None = None) -> list[bytes]:
    """The CDNOW orders as JSONL lines sorted by time. Each order is placed at noon of its day
    plus a deterministic per-customer offset (the file has dates only)."""
    source = path or cdnow_path()
    if source is None:
        raise FileNotFoundError("CDNOW needs the lifetimes wheel: .venv/bin/pip install lifetimes")
    rows: list[tuple[int, bytes]] = []
    with source.open() as fh:
        for n, line in enumerate(fh):
            parts = line.split()
            if len(parts) != 4 or not parts[0].isdigit():
                continue
            cid, date, _cds, value = parts
            day = datetime.strptime(date, "%Y%m%d").replace(tzinfo=UTC)
            offset = (int(cid) * 7919) % 36_000 * 1_000_000
            ts = int(day.timestamp() * 1_000_000) + 12 * 3_600_000_000 + offset
            rows.append(_order(n, f"c{int(cid):05d}", ts, float(value)))
    rows.sort(key=lambda row: row[0])
    return [line for _, line in rows]


def cdnow_like_lines(customers: int, seed: int = 13, days: int = 548) -> list[bytes]:
    """``customers`` customers with 1-10 orders each over ``days`` days: the first order's
    day is uniform, later orders follow at exponential gaps; about half buy once."""
    rng = random.Random(f"cdnow-like-{seed}-{customers}")
    rows: list[tuple[int, bytes]] = []
    n = 0
    span = days * DAY_US
    for i in range(customers):
        cid = f"k{i:07d}"
        orders = 1 if rng.random() < 0.5 else min(10, 2 + int(rng.expovariate(0.5)))
        ts = START_US + int(rng.random() * span * 0.6)
        for _ in range(orders):
            if ts >= START_US + span:
                break
            rows.append(_order(n, cid, ts, rng.lognormvariate(3.3, 0.8)))
            n += 1
            ts += int(rng.expovariate(1 / 40) * DAY_US) + 1_000_000
    rows.sort(key=lambda row: row[0])
    return [line for _, line in rows]


def with_gap(lines: list[bytes], gap_days: int) -> Iterator[bytes]:
    """The events with every timestamp of the second half moved ``gap_days`` later: a silence
    of that long in event time inside the stream."""
    half = len(lines) // 2
    yield from lines[:half]
    shift = gap_days * DAY_US
    for line in lines[half:]:
        event = orjson.loads(line)
        ts = _parse(event["timestamp"]) + shift
        event["timestamp"] = _timestamp(ts)
        yield orjson.dumps(event)


def _parse(text: str) -> int:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return int(moment.timestamp()) * 1_000_000 + moment.microsecond


def write(lines: Iterable[bytes], out: Path) -> int:
    """Write JSONL; return the number of events."""
    count = 0
    with out.open("wb") as fh:
        for line in lines:
            fh.write(line + b"\n")
            count += 1
    return count


def main() -> None:
    ap = argparse.ArgumentParser(description="write population benchmark event files")
    sub = ap.add_subparsers(dest="what", required=True)
    c = sub.add_parser("cdnow")
    c.add_argument("out", type=Path)
    c.add_argument("--gap-days", type=int, default=0)
    like = sub.add_parser("like")
    like.add_argument("customers", type=int)
    like.add_argument("out", type=Path)
    like.add_argument("--gap-days", type=int, default=0)
    args = ap.parse_args()
    lines = cdnow_lines() if args.what == "cdnow" else cdnow_like_lines(args.customers)
    events: Iterable[bytes] = with_gap(lines, args.gap_days) if args.gap_days else lines
    print(write(events, args.out))


if __name__ == "__main__":
    main()
