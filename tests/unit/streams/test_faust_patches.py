"""streams/faust_patches.py: every Faust/aiokafka internal the worker patches or reads is still
there in the installed versions, and a missing or changed one is named (so an upgrade fails
here, loudly, rather than silently losing a patch)."""

from __future__ import annotations

import pytest

from segmentflow.streams import faust_patches
from segmentflow.streams.faust_patches import FaustInternalsChanged, Internal


def test_the_installed_faust_and_aiokafka_have_every_internal_the_worker_uses() -> None:
    assert faust_patches.problems() == [], "\n".join(faust_patches.problems())


def test_a_gone_attribute_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    gone = Internal("aiokafka.consumer.fetcher:FetchResult", "getall_v2", "a future rename")
    monkeypatch.setattr(faust_patches, "INTERNALS", (gone,))
    assert faust_patches.problems() == [
        "aiokafka.consumer.fetcher:FetchResult.getall_v2 is gone: a future rename"
    ]
    with pytest.raises(FaustInternalsChanged, match=r"FetchResult\.getall_v2 is gone"):
        faust_patches.apply()


def test_a_changed_signature_and_an_attribute_no_longer_set_are_named(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    thread = "faust.transport.drivers.aiokafka:AIOKafkaConsumerThread"
    changed = Internal(thread, "_create_worker_consumer", "wrapped", parameters=("self", "x"))
    unset = Internal(
        "aiokafka.consumer.consumer:AIOKafkaConsumer",
        "_fetch_wait",
        "set on the consumer",
        source_mentions="self._fetch_wait_v2 =",
    )
    module = Internal("faust.transport.drivers.gone:Thing", "attr", "read")
    monkeypatch.setattr(faust_patches, "INTERNALS", (changed, unset, module))
    found = faust_patches.problems()
    assert len(found) == 3
    assert found[0].startswith(f"{thread}._create_worker_consumer now takes ('self', 'transport')")
    assert found[1].startswith("aiokafka.consumer.consumer:AIOKafkaConsumer._fetch_wait is no")
    assert found[2].startswith("faust.transport.drivers.gone:Thing is gone")


def test_apply_installs_each_patch_once() -> None:
    from aiokafka.consumer import fetcher
    from faust.transport.drivers import aiokafka as faust_aiokafka

    faust_patches.apply()
    create = faust_aiokafka.AIOKafkaConsumerThread._create_worker_consumer
    getall = fetcher.FetchResult.getall
    fetch = faust_aiokafka.AIOKafkaConsumerThread._fetch_records
    faust_patches.apply()
    assert faust_aiokafka.AIOKafkaConsumerThread._create_worker_consumer is create
    assert fetcher.FetchResult.getall is getall
    assert faust_aiokafka.AIOKafkaConsumerThread._fetch_records is fetch
    assert hasattr(create, "__segmentflow_original__")
    assert faust_patches.problems() == []  # still recognised once patched
