"""Tests of the deterministic synthetic customer generator (segmentflow.synthetic)."""

from __future__ import annotations

import doctest
import itertools
import json
import math
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from segmentflow import synthetic
from segmentflow.synthetic import (
    ARCHETYPES,
    BAD_KINDS,
    GeneratedMessage,
    archetype_of,
    generate,
    manifest,
    to_jsonl_lines,
    write_jsonl,
)

START = datetime(2025, 10, 1, tzinfo=UTC)
TOPIC_TYPES = {
    "website": {
        "page_view",
        "product_view",
        "add_to_cart",
        "remove_from_cart",
        "checkout_started",
        "search",
        "identify",
    },
    "email": {
        "email_sent",
        "email_delivered",
        "email_opened",
        "email_clicked",
        "email_bounced",
        "email_unsubscribed",
        "email_complained",
    },
    "purchase": {"order_completed", "order_refunded"},
}


@pytest.fixture(scope="module")
def clean() -> list[GeneratedMessage]:
    return generate(customers=120, seed=11, start=START, days=120)


@pytest.fixture(scope="module")
def dirty() -> list[GeneratedMessage]:
    return generate(customers=120, seed=11, start=START, days=120, bad_ratio=0.05)


def _parse_ts(value: str) -> datetime:
    assert value.endswith("Z"), value
    return datetime.fromisoformat(value[:-1] + "+00:00")


def _money_ok(value: Any) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value >= 0
    )


def test_same_seed_same_bytes_different_seed_differs() -> None:
    a = generate(customers=40, seed=5, start=START, days=60, bad_ratio=0.05)
    b = generate(customers=40, seed=5, start=START, days=60, bad_ratio=0.05)
    c = generate(customers=40, seed=6, start=START, days=60, bad_ratio=0.05)
    assert [(m.topic_kind, m.key, m.value) for m in a] == [
        (m.topic_kind, m.key, m.value) for m in b
    ]
    assert a == b
    assert [m.value for m in a] != [m.value for m in c]


def test_sorted_by_timestamp_and_within_window(dirty: list[GeneratedMessage]) -> None:
    assert all(x.at_us <= y.at_us for x, y in itertools.pairwise(dirty))
    valid = [m for m in dirty if m.event is not None]
    times = [_parse_ts(m.event["timestamp"]) for m in valid if m.event is not None]
    assert times == sorted(times)
    assert times[0] >= START and times[-1] < START + timedelta(days=120)
    for m in valid:
        assert m.event is not None
        assert m.at_us == int(_parse_ts(m.event["timestamp"]).timestamp()) * 1_000_000


def test_valid_events_meet_contract(clean: list[GeneratedMessage]) -> None:
    ids = set()
    orders: set[str] = set()
    for m in clean:
        ev = m.event
        assert ev is not None and m.expected_reason is None and not m.duplicate
        assert set(ev) == {"event_id", "customer_id", "type", "timestamp", "properties"}
        assert isinstance(ev["event_id"], str) and ev["event_id"]
        assert isinstance(ev["customer_id"], str) and ev["customer_id"].startswith("c-")
        assert ev["type"] in TOPIC_TYPES[m.topic_kind]
        assert m.key == ev["customer_id"].encode("utf-8")
        assert json.loads(m.value) == ev
        assert b" " not in m.value.split(b'"properties"')[0]  # compact encoding
        assert len(m.value) <= 65536
        _parse_ts(ev["timestamp"])
        props = ev["properties"]
        etype = ev["type"]
        if etype.startswith("email_"):
            assert isinstance(props["campaign_id"], str)
        if etype == "email_clicked":
            assert props["url"].startswith("https://")
        if etype == "email_bounced":
            assert props["bounce_type"] in ("hard", "soft")
        if etype == "order_completed":
            assert props["currency"] == "EUR" and _money_ok(props["revenue"])
            assert props["items"]
            for item in props["items"]:
                assert isinstance(item["quantity"], int) and item["quantity"] >= 1
                assert _money_ok(item["price"]) and isinstance(item["product_id"], str)
            total = sum(i["price"] * i["quantity"] for i in props["items"])
            assert abs(total - props["revenue"]) < 0.01
            orders.add(props["order_id"])
        if etype == "order_refunded":
            assert _money_ok(props["amount"]) and props["order_id"] in orders
        if etype in ("add_to_cart", "product_view"):
            assert _money_ok(props["price"])
        if etype == "add_to_cart":
            assert isinstance(props["quantity"], int) and props["quantity"] >= 0
        if etype == "identify":
            traits = props["traits"]
            if "email" in traits:
                assert traits["email"].endswith("@example.com")
                assert isinstance(traits["age"], int) and isinstance(traits["vip"], bool)
                assert traits["country"] in {"DE", "FR", "US", "GB", "NL", "ES", "IT", "PL"}
                _parse_ts(traits["signup_at"])
                assert {"city", "gender", "plan"} <= set(traits)
        ids.add(ev["event_id"])
    assert len(ids) == len(clean)
    assert clean[0].event is not None and clean[0].event["event_id"] == "e-11-0"


def test_every_customer_identifies_and_all_topics_present(clean: list[GeneratedMessage]) -> None:
    kinds = Counter(m.topic_kind for m in clean)
    assert set(kinds) == {"website", "email", "purchase"}
    identified = {
        m.event["customer_id"] for m in clean if m.event and m.event["type"] == "identify"
    }
    assert len(identified) == 120
    types = Counter(m.event["type"] for m in clean if m.event)
    for needed in ("search", "remove_from_cart", "email_clicked", "order_refunded"):
        assert types[needed] > 0, needed


def test_bad_messages_ratio_and_kinds(dirty: list[GeneratedMessage]) -> None:
    bad = [m for m in dirty if m.event is None]
    assert 0.04 <= len(bad) / len(dirty) <= 0.06
    kinds = Counter(m.bad_kind for m in bad)
    assert set(kinds) == set(BAD_KINDS)
    for m in bad:
        assert m.bad_kind is not None and m.expected_reason == BAD_KINDS[m.bad_kind]
        assert not m.duplicate
    by_kind = {m.bad_kind: m for m in bad}
    assert len(by_kind["oversized"].value) > 65536
    assert by_kind["missing_key"].key is None
    mismatch = by_kind["key_mismatch"]
    assert mismatch.key != json.loads(mismatch.value)["customer_id"].encode()
    with pytest.raises(UnicodeDecodeError):
        by_kind["invalid_utf8"].value.decode("utf-8")
    assert by_kind["wrong_topic"].topic_kind == "purchase"
    assert json.loads(by_kind["wrong_topic"].value)["type"] in TOPIC_TYPES["website"]


def test_duplicates_are_exact_resends(dirty: list[GeneratedMessage]) -> None:
    dups = [i for i, m in enumerate(dirty) if m.duplicate]
    assert dups
    originals = {m.value for m in dirty if m.event is not None and not m.duplicate}
    for i in dups:
        m = dirty[i]
        assert m.event is not None and m.value in originals and m.expected_reason is None
    valid_ids = Counter(m.event["event_id"] for m in dirty if m.event and not m.duplicate)
    assert max(valid_ids.values()) == 1


def test_bad_ratio_zero_has_no_bad_or_duplicates(clean: list[GeneratedMessage]) -> None:
    assert all(m.event is not None and not m.duplicate for m in clean)


def test_decoder_agrees_with_expected_reasons(dirty: list[GeneratedMessage]) -> None:
    decode = pytest.importorskip("segmentflow.schemas.decode")
    for m in dirty:
        result = decode.decode_message(m.value, m.key, m.topic_kind)
        if m.event is None:
            assert isinstance(result, decode.Rejection), m.bad_kind
            assert result.reason == m.expected_reason, (m.bad_kind, result)
        else:
            assert not isinstance(result, decode.Rejection), (result, m.value)


def test_archetypes_all_present_and_manifest_consistent(clean: list[GeneratedMessage]) -> None:
    truth = manifest(120, 11)
    assert set(truth.values()) == set(ARCHETYPES)
    counts = Counter(truth.values())
    for name, weight in synthetic.DEFAULT_MIX.items():
        assert abs(counts[name] - 120 * weight / sum(synthetic.DEFAULT_MIX.values())) <= 3
    for cid, arch in truth.items():
        assert archetype_of(cid, 11) == arch
    assert {m.event["customer_id"] for m in clean if m.event} <= set(truth)


def test_mix_is_configurable() -> None:
    truth = manifest(50, 3, mix={"loyal_high_value": 1.0, "dormant": 1.0})
    assert set(truth.values()) == {"loyal_high_value", "dormant"}
    with pytest.raises(ValueError):
        manifest(5, 3, mix={"nope": 1.0})
    msgs = generate(10, 3, START, 30, mix={"window_shopper": 1})
    assert msgs and all(
        archetype_of(m.key.decode(), 3, {"window_shopper": 1}) for m in msgs if m.key
    )


def test_archetypes_behave_differently() -> None:
    msgs = generate(customers=300, seed=2, start=START, days=180)
    truth = manifest(300, 2)
    per: dict[str, Counter[str]] = {a: Counter() for a in ARCHETYPES}
    revenue: dict[str, list[float]] = {a: [] for a in ARCHETYPES}
    last_order: dict[str, datetime] = {}
    for m in msgs:
        assert m.event is not None
        arch = truth[m.event["customer_id"]]
        per[arch][m.event["type"]] += 1
        if m.event["type"] == "order_completed":
            revenue[arch].append(m.event["properties"]["revenue"])
            last_order[m.event["customer_id"]] = _parse_ts(m.event["timestamp"])
    n = Counter(truth.values())

    def rate(arch: str, etype: str) -> float:
        return per[arch][etype] / n[arch]

    def aov(arch: str) -> float:
        return sum(revenue[arch]) / len(revenue[arch])

    assert aov("loyal_high_value") > 2 * aov("bargain_hunter")
    assert rate("bargain_hunter", "order_completed") > 3 * rate("window_shopper", "order_completed")
    assert rate("window_shopper", "search") > 2 * rate("loyal_high_value", "search")
    assert rate("email_engaged", "email_clicked") > 3 * rate("window_shopper", "email_clicked")
    assert rate("one_time_buyer", "order_completed") == 1.0
    end = START + timedelta(days=180)
    dormant = [c for c, a in truth.items() if a == "dormant"]
    assert all(end - last_order[c] > timedelta(days=90) for c in dormant)
    # Seasonality: December sees more orders per day than October.
    months = Counter(
        m.event["timestamp"][:7] for m in msgs if m.event and m.event["type"] == "order_completed"
    )
    assert months["2025-12"] / 31 > months["2025-10"] / 31


def test_volume_and_scale() -> None:
    msgs = generate(customers=200, seed=4, start=START, days=180)
    per_customer = len(msgs) / 200
    assert 50 <= per_customer <= 150
    half = generate(customers=200, seed=4, start=START, days=180, scale=0.5)
    assert len(half) < len(msgs)


def test_jsonl_output(dirty: list[GeneratedMessage], tmp_path: Path) -> None:
    lines = to_jsonl_lines(dirty)
    valid = [m for m in dirty if m.event is not None and not m.duplicate]
    assert len(lines) == len(valid)
    assert len(to_jsonl_lines(dirty, include_duplicates=True)) == sum(1 for m in dirty if m.event)
    path = tmp_path / "events.jsonl"
    assert write_jsonl(dirty, path) == len(lines)
    text = path.read_text("utf-8")
    assert text.endswith("\n") and text.splitlines() == lines
    stamps = [json.loads(line)["timestamp"] for line in lines]
    assert stamps == sorted(stamps)


def test_main_writes_file_and_manifest(tmp_path: Path) -> None:
    out, man = tmp_path / "e.jsonl", tmp_path / "m.json"
    argv = [str(out), "--customers", "15", "--days", "30", "--seed", "9", "--manifest", str(man)]
    assert synthetic.main(argv) == 0
    assert out.read_text().count("\n") > 15
    assert json.loads(man.read_text()) == manifest(15, 9)


def test_argument_validation() -> None:
    with pytest.raises(ValueError):
        generate(10, 1, START, 0)
    with pytest.raises(ValueError):
        generate(10, 1, START, 10, bad_ratio=1.0)
    with pytest.raises(ValueError):
        generate(10, 1, START, 10, scale=0)
    assert generate(0, 1, START, 10, bad_ratio=0.1) == []
    naive = generate(5, 1, START.replace(tzinfo=None), 20)
    assert naive == generate(5, 1, START, 20)


def test_doctests() -> None:
    result = doctest.testmod(synthetic, verbose=False)
    assert result.attempted > 0 and result.failed == 0
