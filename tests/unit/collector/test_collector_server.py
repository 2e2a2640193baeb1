"""Collector serving pieces that need no network: backoff, the guarded protocol's config."""

from __future__ import annotations

import itertools

import pytest

from segmentflow.collector import CollectorConfig
from segmentflow.collector.server import GuardedH11Protocol, guarded_protocol, uvicorn_config
from segmentflow.config import ConfigError
from segmentflow.triggers.backoff import Backoff


def test_backoff_is_capped_exponential() -> None:
    assert list(itertools.islice(Backoff(0.5, cap=10.0, jitter=0).delays(), 7)) == [
        0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0,
    ]  # fmt: skip


def test_guarded_protocol_carries_its_deadline() -> None:
    cls = guarded_protocol(2.5)
    assert issubclass(cls, GuardedH11Protocol) and cls.header_timeout == 2.5
    with pytest.raises(ValueError):
        guarded_protocol(0)
    config = uvicorn_config(object(), "127.0.0.1", 1, header_timeout=3, keep_alive=4)
    assert config.http.header_timeout == 3
    assert config.timeout_keep_alive == 4


def test_inflight_limit_must_fit_one_body() -> None:
    with pytest.raises(ConfigError, match="max_inflight_bytes"):
        CollectorConfig(
            write_keys=frozenset({"k"}), topics={}, max_body_bytes=10, max_inflight_bytes=5
        )
