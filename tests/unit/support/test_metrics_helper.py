"""tests/support/metrics.py: parsing the worker's real exposition text and retrying a busy
worker (a fake stack; no sleeping beyond the tiny pause)."""

from __future__ import annotations

import doctest
import urllib.error
from email.message import Message

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from support import metrics
from support.http import get
from support.metrics import fetch, fetch_text, parse


def _worker_text() -> str:
    registry = CollectorRegistry()
    applied = Counter("segmentflow_events_applied", "x", ["topic"], registry=registry)
    applied.labels("purchase-events").inc(3)
    applied.labels("website-events").inc(4)
    Gauge("segmentflow_watermark_seconds", "x", registry=registry).set(1_767_225_600.25)
    lag = Gauge("segmentflow_consumer_lag", "x", ["tp"], registry=registry)
    lag.labels("purchase-events/0").set(0)
    lag.labels("purchase-events/2").set(5)
    return generate_latest(registry).decode()


def test_doctests() -> None:
    result = doctest.testmod(metrics, verbose=False)
    assert result.attempted > 0 and result.failed == 0


def test_parses_what_prometheus_client_writes() -> None:
    m = parse(_worker_text())
    assert m.total("segmentflow_events_applied_total") == 7
    assert m.by_label("segmentflow_events_applied_total") == {
        "purchase-events": 3.0,
        "website-events": 4.0,
    }
    assert m.total("segmentflow_watermark_seconds") == 1_767_225_600.25
    assert m.label_values("segmentflow_consumer_lag", "tp") == {
        "purchase-events/0",
        "purchase-events/2",
    }
    assert "segmentflow_events_applied_total" in m
    assert "segmentflow_events_applied_created" in m  # _created samples stay separate
    assert m.by_label("segmentflow_watermark_seconds") == {"": 1_767_225_600.25}


class FlakyStack:
    """Answers ``/metrics`` after ``failures`` timeouts."""

    def __init__(self, failures: int, error: OSError | None = None) -> None:
        self.failures = failures
        self.error = error or TimeoutError("timed out")
        self.calls = 0

    def get(self, path: str, index: int = 0, token: str | None = None) -> bytes:
        assert path == "/metrics"
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return _worker_text().encode()


def test_a_busy_worker_is_retried_until_it_answers() -> None:
    stack = FlakyStack(failures=3)
    assert fetch(stack, pause=0).total("segmentflow_events_applied_total") == 7
    assert stack.calls == 4
    refused = FlakyStack(failures=2, error=ConnectionRefusedError())
    assert "segmentflow_watermark_seconds" in fetch_text(refused, pause=0)


def test_gives_up_after_the_overall_limit() -> None:
    with pytest.raises(TimeoutError):
        fetch_text(FlakyStack(failures=10**9), limit=0.0, pause=0)


def test_an_http_error_is_an_answer_not_retried() -> None:
    denied = urllib.error.HTTPError("http://w/metrics", 401, "Unauthorized", Message(), None)
    stack = FlakyStack(failures=5, error=denied)
    with pytest.raises(urllib.error.HTTPError):
        fetch_text(stack, pause=0)
    assert stack.calls == 1


def test_get_with_no_limit_tries_once() -> None:
    stack = FlakyStack(failures=1)
    with pytest.raises(TimeoutError):
        get(stack, "/metrics", limit=0, pause=0)
    assert stack.calls == 1
    assert get(stack, "/metrics", limit=0, pause=0).startswith(b"# HELP")
