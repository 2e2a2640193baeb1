"""The Faust application: settings tuned for a worker that is ready in seconds.

Consumer group = ``SEGMENTFLOW_NAMESPACE``; a new group starts at the earliest offset. Values
and keys are raw bytes: decoding is the engine's job, so bad input becomes a dead letter rather
than a serializer crash.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import faust

from segmentflow.config import Settings
from segmentflow.kafka_options import KafkaOptions

#: Tuned Faust settings (see README "Tuning"). The group join on Tansu answers after about half
#: the session timeout, so short timeouts make a worker ready in seconds instead of 30 s.
TUNING: dict[str, Any] = {
    "broker_session_timeout": 6.0,
    "broker_heartbeat_interval": 0.5,
    "broker_rebalance_timeout": 10.0,
    "broker_request_timeout": 30.0,
    "broker_commit_interval": 1.0,
    "broker_commit_every": 10_000,
    "broker_max_poll_records": 5000,
    "consumer_max_fetch_size": 4 * 1024 * 1024,
    "stream_buffer_maxsize": 20_000,
    # On a rebalance Faust would wait for every consumed message to be acked; the worker holds
    # messages unacked in its event-time aligner until more input moves the watermark, which
    # the paused consumer never delivers: the rebalance hung forever. Held messages need no
    # wait: after the rebalance Faust seeks every partition back to its committed offset.
    "stream_wait_empty": False,
    "producer_linger": 0.005,
    "producer_max_batch_size": 256 * 1024,
    "producer_acks": -1,
    "topic_disable_leader": True,
}

#: Longest wait of a consumer Fetch with no data (Faust hard-codes 1500 ms). Tansu does not
#: answer a waiting Fetch when data arrives but re-checks about every ``wait / 2``, so a quiet
#: worker saw new events up to 0.75 s late; 100 ms costs nothing under load (a Fetch that finds
#: data returns at once) and about 10 empty Fetch requests/s when idle.
FETCH_MAX_WAIT_MS = 100
_fetch_wait_patched = False


def patch_fetch_max_wait(ms: int = FETCH_MAX_WAIT_MS) -> None:
    """Make Faust's consumer use ``fetch_max_wait_ms=ms`` (idempotent)."""
    global _fetch_wait_patched
    if _fetch_wait_patched:
        return
    from faust.transport.drivers import aiokafka as faust_aiokafka

    original = faust_aiokafka.AIOKafkaConsumerThread._create_worker_consumer

    def create(self: Any, transport: Any) -> Any:
        consumer = original(self, transport)
        consumer._fetch_max_wait_ms = ms  # read by AIOKafkaConsumer.start() -> Fetcher
        return consumer

    faust_aiokafka.AIOKafkaConsumerThread._create_worker_consumer = create  # type: ignore
    _fetch_wait_patched = True


#: per app (``id(app)``): called with the error of a failed fetch, or ``None`` after a success
_fetch_listeners: dict[int, Callable[[BaseException | None], None]] = {}
_fetch_errors_patched = False
FETCH_MAX_BACKOFF = 5.0


def on_fetch(app: faust.App, listener: Callable[[BaseException | None], None]) -> None:
    """Tell ``listener`` about each failed fetch (its error) and each success (``None``)."""
    _fetch_listeners[id(app)] = listener


#: decode errors caught in aiokafka's ``FetchResult.getall`` since the last fetch call
_decode_errors: list[BaseException] = []


def guard_getall(original: Callable[..., list[Any]]) -> Callable[..., list[Any]]:
    """Wrap aiokafka's ``FetchResult.getall``: a partition whose records cannot be decoded
    (unsupported codec, corrupt batch) yields nothing and is fetched again from the same
    offset, while the other partitions' records of the same fetch are delivered (an error
    escaping ``getall`` would drop them after their positions moved: lost messages)."""

    def getall(self: Any, *args: Any, **kwargs: Any) -> list[Any]:
        try:
            return original(self, *args, **kwargs)
        except Exception as exc:
            self._partition_records = None  # position unchanged: refetched from there
            _decode_errors.append(exc)
            return []

    return getall


def guard_fetch(
    original: Callable[..., Awaitable[Any]],
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
) -> Callable[..., Awaitable[Any]]:
    """Wrap Faust's ``AIOKafkaConsumerThread._fetch_records``: an error (or a partition that
    could not be decoded) is reported to the app's listener (:func:`on_fetch`) and followed
    by a capped backoff; a failed call returns no records. ``None`` is reported once fetching
    works again."""
    from aiokafka.errors import ConsumerStoppedError

    delays: dict[int, float] = {}

    async def fetch_records(self: Any, *args: Any, **kwargs: Any) -> Any:
        app_id = id(self.consumer.app)
        listener = _fetch_listeners.get(app_id)
        records: Any = {}
        try:
            records = await original(self, *args, **kwargs)
            error = _decode_errors[-1] if _decode_errors else None
        except ConsumerStoppedError:
            raise
        except Exception as exc:
            error = exc
        _decode_errors.clear()
        if error is not None:
            if listener is not None:
                listener(error)
            delay = delays[app_id] = min(delays.get(app_id, 0.05) * 2, FETCH_MAX_BACKOFF)
            await sleep(delay)
        elif delays.pop(app_id, None) is not None and listener is not None:
            listener(None)
        return records

    return fetch_records


def patch_fetch_errors() -> None:
    """Make a failed fetch or decode (an unsupported codec, a corrupt batch, anything aiokafka
    raises while reading records) a retry instead of a crash of Faust's consumer (idempotent).

    Nothing is lost or skipped: aiokafka advances a partition's position only when ``getall``
    returns its records; a partition that fails to decode keeps its position and is fetched
    again (and fails again, with backoff, until the cause is fixed)."""
    global _fetch_errors_patched
    if _fetch_errors_patched:
        return
    from aiokafka.consumer import fetcher
    from faust.transport.drivers import aiokafka as faust_aiokafka

    fetcher.FetchResult.getall = guard_getall(fetcher.FetchResult.getall)  # type: ignore[method-assign]
    thread = faust_aiokafka.AIOKafkaConsumerThread
    thread._fetch_records = guard_fetch(thread._fetch_records)  # type: ignore[method-assign,assignment]
    _fetch_errors_patched = True


def compression(settings: Settings) -> str | None:
    """The producer codec (``SEGMENTFLOW_KAFKA_COMPRESSION``) in aiokafka's terms."""
    return KafkaOptions.from_settings(settings).compression


def broker_credentials(settings: Settings) -> Any:
    """Faust credentials for SASL/SSL from the environment, or ``None`` for PLAINTEXT."""
    return KafkaOptions.from_settings(settings).faust_credentials()


def create_app(settings: Settings, partitions: int = 4, **overrides: Any) -> faust.App:
    """A Faust app for ``settings`` (consumer group and web port from the environment)."""
    options: dict[str, Any] = {
        "broker": settings.kafka_url,
        "datadir": str(Path(tempfile.gettempdir()) / f"segmentflow-{settings.namespace}-data"),
        "broker_credentials": broker_credentials(settings),
        "store": "memory://",
        "value_serializer": "raw",
        "key_serializer": "raw",
        "consumer_auto_offset_reset": "earliest",
        "topic_partitions": partitions,
        "producer_compression_type": compression(settings),
        "web_port": settings.web_port,
        "web_bind": settings.web_host,
        "web_host": "127.0.0.1",
        "web_in_thread": False,
        "autodiscover": False,
        **TUNING,
    }
    options.update(overrides)
    patch_fetch_max_wait()
    patch_fetch_errors()
    return faust.App(settings.namespace, **options)
