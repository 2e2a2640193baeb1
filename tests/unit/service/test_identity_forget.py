"""Forget after an identity merge (CONTRACT §5 "forget", §3 "Identity"): the survivor's aliases
go, the merged-away tombstones no longer name it but keep their sequence numbers, and a later
event of the anonymous id starts a new profile whose change ids continue."""

from __future__ import annotations

from typing import Any

import orjson

from segmentflow.config import config_from_dict
from segmentflow.engine.identity import MERGED_INTO
from segmentflow.schemas.timefmt import format_us
from segmentflow.service.processor import InputRecord, Processor
from segmentflow.state.memory import MemoryStore

T0 = 1_767_225_600_000_000


def _record(n: int, cid: str, kind: str, **extra: Any) -> InputRecord:
    props: dict[str, Any] = {"product_id": "p"} if kind == "product_view" else {"traits": {}}
    body = {
        "event_id": f"e{n}",
        "customer_id": cid,
        "type": kind,
        "timestamp": format_us(T0 + n * 1_000_000),
        "properties": props,
        **extra,
    }
    return InputRecord("website-events", "website", 0, n, cid.encode(), orjson.dumps(body))


def test_forget_of_the_survivor_unlinks_every_merged_id() -> None:
    store = MemoryStore()
    processor = Processor(config_from_dict({"persona": {"enabled": False}}), store)
    processor.process([_record(0, "anon", "product_view")])
    processor.process([_record(1, "user", "identify", anonymous_id="anon")])
    assert store.resolve_aliases(["anon"]) == {"anon": "user"}
    assert processor.counters.merged == {"website-events": 1}
    processor.process([_record(1, "user", "identify", anonymous_id="anon")])  # a repeat
    assert processor.counters.merged == {"website-events": 1}, "merged once"
    tomb = store.get("anon")
    assert tomb is not None and tomb.extra == {MERGED_INTO: "user"}
    final = processor.forget("user")
    assert [c.current for c in final] == [None]
    assert store.resolve_aliases(["anon"]) == {}
    tomb = store.get("anon")
    assert tomb is not None and tomb.extra == {} and tomb.seqs == {"lifecycle": 2}
    changes = processor.process([_record(2, "anon", "product_view")]).changes
    assert [(c.customer_id, c.dimension, c.sequence) for c in changes] == [("anon", "lifecycle", 3)]
