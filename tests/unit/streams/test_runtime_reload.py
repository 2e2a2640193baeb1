"""A running worker switched to a new config (SIGHUP, CONTRACT §6): the new rule is filled for
the stored customers from its ticks (``cause.kind`` ``config``), the population state is kept,
the stream goes on under the new config, and a config that does not load leaves the old one."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from pathlib import Path
from typing import Any

import pytest
from support.config_change import BASE, BUY, big, order, worker
from support.fakes import FakeKafka

from segmentflow.config import SegmentConfig, Settings, config_from_dict
from segmentflow.service.processor import Processor
from segmentflow.state.memory import MemoryStore
from segmentflow.streams import hangup
from segmentflow.streams.hangup import Hangup, reload_config
from segmentflow.streams.metrics import registry_for, render
from segmentflow.streams.runtime import SegmentWorker, deliveries

BIG = [{"name": "big", "when": "revenue >= 400.0"}]
BASE_YAML = "rfm: {enabled: false}\npersona: {enabled: false}\n"
BIG_YAML = BASE_YAML + "rules:\n  - name: big\n    when: 'revenue >= 400.0'\n"


def running(config: dict[str, Any]) -> tuple[SegmentWorker, FakeKafka, MemoryStore]:
    """A worker that applied three orders and recorded the config its state follows."""
    store = MemoryStore(outbox=True)
    w, kafka = worker(config, store)
    w.watermark.set_end((BUY, 0), 5)
    records = [order(1, "a", 50), order(2, "b", 500), order(3, "c", 900)]
    asyncio.run(w.handle_batch(deliveries(records, ["1", "2", "3"])))
    asyncio.run(w.tick())
    return w, kafka, store


def test_a_reload_fills_a_new_rule_and_the_stream_goes_on_under_it() -> None:
    w, kafka, store = running(BASE)
    processor, ranks = w.processor, w.processor.engine.ranks
    old_walk = w.config_walk
    assert asyncio.run(w.reload(config_from_dict(BASE | {"rules": BIG}))) is None
    assert w.processor is processor and w.processor.engine.ranks is ranks
    assert w.config is w.processor.config and [r.name for r in w.processor.engine.rules] == ["big"]
    assert w.config_walk is not old_walk
    asyncio.run(w.tick())
    got = big(kafka)
    assert sorted((d["customer_id"], d["current"]) for d in got) == [("b", "in"), ("c", "in")]
    assert {d["cause"]["kind"] for d in got} == {"config"}
    assert w.config_walk.done and store.populations()["rule:big"] == {"in": 2}
    text = render(registry_for(w)).decode()
    assert "segmentflow_config_reevaluated_customers_total 3.0" in text

    asyncio.run(w.handle_batch(deliveries([order(4, "d", 700)], ["4"])))
    asyncio.run(w.tick())
    by_event = [d for d in big(kafka) if d["customer_id"] == "d"]
    assert [(d["current"], d["cause"]["kind"]) for d in by_event] == [("in", "event")]
    assert kafka.acked == ["1", "2", "3", "4"]
    assert len(big(kafka)) == 3  # nothing twice


@pytest.mark.parametrize("written_by", ["this worker", "a bare processor"])
def test_a_reload_before_the_first_tick_still_fills_the_new_rule(written_by: str) -> None:
    """The config the stored state follows is recorded before the switch, by the first batch
    or, for state written without a worker (no fingerprints), by the reload itself: the new
    rule is walked, not taken to hold already."""
    store = MemoryStore(outbox=True)
    records = [order(1, "a", 50), order(2, "b", 500)]
    if written_by == "a bare processor":
        Processor(config_from_dict(BASE), store).process(records)
    w, kafka = worker(BASE, store)
    w.watermark.set_end((BUY, 0), 5)
    if written_by == "this worker":
        asyncio.run(w.handle_batch(deliveries(records, ["1", "2"])))
    assert asyncio.run(w.reload(config_from_dict(BASE | {"rules": BIG}))) is None  # no tick yet
    asyncio.run(w.tick())
    assert [(d["customer_id"], d["cause"]["kind"]) for d in big(kafka)] == [("b", "config")]


def test_a_removed_rule_empties_on_reload() -> None:
    w, kafka, store = running(BASE | {"rules": BIG})
    assert store.populations()["rule:big"] == {"in": 2}
    assert asyncio.run(w.reload(config_from_dict(BASE))) is None
    asyncio.run(w.tick())
    outs = [d for d in big(kafka) if d["cause"]["kind"] == "config"]
    assert sorted((d["customer_id"], d["previous"], d["current"]) for d in outs) == [
        ("b", "in", "out"),
        ("c", "in", "out"),
    ]
    assert not any(store.populations().get("rule:big", {}).values())


def test_a_reload_that_needs_a_restart_keeps_the_old_config() -> None:
    w, _, _ = running(BASE)
    before = w.processor.engine
    why = asyncio.run(w.reload(config_from_dict({"persona": {"enabled": False}})))  # RFM on
    assert why is not None and "restart" in why and "RFM" in why
    assert w.processor.engine is before and w.config.rfm.enabled is False


@pytest.mark.parametrize(
    "text",
    [
        "rules: [name: big\n",  # not YAML
        "rfm: {enabled: false}\npersona: {enabled: false}\nbogus: 1\n",  # unknown key
        BASE_YAML + "rules:\n  - name: big\n    when: 'revenue >>= 1'\n",  # does not compile
    ],
    ids=["yaml", "unknown-key", "cel"],
)
def test_a_bad_file_on_sighup_is_logged_and_the_worker_goes_on(
    tmp_path: Path, text: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "segmentflow.yaml"
    path.write_text(BASE_YAML)
    w, kafka, _ = running(BASE)
    before = w.processor.engine
    settings = Settings(config=str(path))
    path.write_text(text)
    with caplog.at_level(logging.ERROR, logger="segmentflow.worker"):
        assert asyncio.run(reload_config(w, settings)) is False
    assert "not applied" in caplog.text and str(path) in caplog.text
    assert w.processor.engine is before
    path.write_text(BIG_YAML)  # fixed: the next SIGHUP applies it
    assert asyncio.run(reload_config(w, settings)) is True
    asyncio.run(w.tick())
    assert sorted(d["customer_id"] for d in big(kafka)) == ["b", "c"]


def test_sighups_during_a_reload_fold_into_one_more(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "segmentflow.yaml"
    path.write_text(BIG_YAML)
    w, _, _ = running(BASE)
    hup = Hangup(w, Settings(config=str(path)))
    reload = w.reload
    calls: list[int] = []

    async def reload_and_signal(config: SegmentConfig) -> str | None:
        calls.append(1)
        if len(calls) == 1:  # two more SIGHUPs while the first reload runs
            hup.signal()
            hup.signal()
        return await reload(config)

    monkeypatch.setattr(w, "reload", reload_and_signal)

    async def signals() -> None:
        hup.signal()
        hup.signal()  # before the reload read the file: the same reload covers it
        assert hup.task is not None
        while not hup.task.done():
            await asyncio.sleep(0)

    asyncio.run(signals())
    assert hup.applied == 2 and hup.refused == 0 and len(calls) == 2
    assert [r.name for r in w.processor.engine.rules] == ["big"]


def test_a_sighup_during_start_up_is_noted_not_fatal() -> None:
    previous = signal.getsignal(signal.SIGHUP)
    try:
        hangup.catch_early()
        os.kill(os.getpid(), signal.SIGHUP)  # default action: the process would end
        assert hangup._early["hup"] is True
    finally:
        signal.signal(signal.SIGHUP, previous)
        hangup._early["hup"] = False
