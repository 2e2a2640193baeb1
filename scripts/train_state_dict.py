"""Train the zstd dictionary of the per-customer state encoding (state.zdict).

Run once; the dictionary is committed. It is trained on the state bodies (the positional orjson
of :meth:`CustomerState.encode`, without the event-id hashes) of a synthetic replay, so that
field layout, segment names, trait keys and typical numbers compress to a few bytes. States
encoded with one dictionary can only be decoded with it: **never overwrite the committed file**;
a new dictionary needs a new encoding version in ``segmentflow/engine/state.py``.

Usage::

    .venv/bin/python scripts/train_state_dict.py OUT.zdict [--customers 2000] [--days 120]
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path

import zstandard

from segmentflow.config import load_config
from segmentflow.schemas.decode import Limits
from segmentflow.service.replay import events_from_dicts, run
from segmentflow.state.memory import MemoryStore
from segmentflow.synthetic import generate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--customers", type=int, default=2000)
    ap.add_argument("--days", type=int, default=120)
    ap.add_argument("--seed", type=int, default=101)
    ap.add_argument("--size", type=int, default=4096, help="dictionary bytes")
    args = ap.parse_args()

    config = load_config(None)
    limits = Limits(config.max_event_bytes, config.max_traits, config.max_trait_length)
    messages = generate(args.customers, args.seed, datetime(2026, 1, 1, tzinfo=UTC), args.days)
    events = events_from_dicts((m.event for m in messages if m.event is not None), limits)
    store = MemoryStore()
    run(events, config, None, lambda change: None, store)
    customers = {m.event["customer_id"]: None for m in messages if m.event is not None}
    bodies: list[bytes | bytearray | memoryview[int]] = [
        state.body() for state in store.load_many(customers).values()
    ]
    trained = zstandard.train_dictionary(args.size, bodies)
    args.out.write_bytes(trained.as_bytes())
    print(f"{args.out}: {len(trained.as_bytes())} bytes from {len(bodies)} states")


if __name__ == "__main__":
    main()
