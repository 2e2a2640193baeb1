"""Every use of Faust's and aiokafka's internals, in one module.

The worker relies on a few private attributes of Faust (``faust.transport.drivers.aiokafka``)
and aiokafka: it wraps two methods, sets one consumer option Faust hard-codes, and reads the
consumer's committed offsets, fetch positions and fetch state. :data:`INTERNALS` lists each one
and :func:`check` verifies them against the installed versions, naming what moved, so an
upgrade fails loudly (at start and in ``tests/unit/streams/test_faust_patches.py``) instead of
silently losing a patch. :func:`apply` installs the patches (idempotent).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import faust
from faust.transport.consumer import CONSUMER_FETCHING as CONSUMER_FETCHING

from segmentflow.triggers.backoff import Backoff


@dataclass(frozen=True)
class Internal:
    """A private attribute the worker uses: where it lives, what for, and (for a method) the
    parameters it must take, or (for an instance attribute) the text its owner's source must
    contain."""

    owner: str
    attribute: str
    why: str
    parameters: tuple[str, ...] | None = None
    source_mentions: str | None = None


INTERNALS: tuple[Internal, ...] = (
    Internal(
        "faust.transport.drivers.aiokafka:AIOKafkaConsumerThread",
        "_create_worker_consumer",
        "wrapped to set fetch_max_wait_ms (patch_fetch_max_wait)",
        parameters=("self", "transport"),
    ),
    Internal(
        "aiokafka.consumer.consumer:AIOKafkaConsumer",
        "_fetch_max_wait_ms",
        "set on the consumer Faust creates (read by AIOKafkaConsumer.start -> Fetcher)",
        source_mentions="self._fetch_max_wait_ms",
    ),
    Internal(
        "faust.transport.drivers.aiokafka:AIOKafkaConsumerThread",
        "_fetch_records",
        "wrapped so a failed fetch is a retry, not a crash (guard_fetch)",
    ),
    Internal(
        "aiokafka.consumer.fetcher:FetchResult",
        "getall",
        "wrapped so an undecodable partition is fetched again (guard_getall)",
    ),
    Internal(
        "aiokafka.consumer.fetcher:FetchResult",
        "_partition_records",
        "cleared by guard_getall so the failed partition keeps its position",
        source_mentions="self._partition_records",
    ),
    Internal(
        "faust.transport.drivers.aiokafka:AIOKafkaConsumerThread",
        "_ensure_consumer",
        "reads the committed offset and fetch position of a partition (start_offset)",
    ),
    Internal(
        "faust.transport.drivers.aiokafka:Consumer",
        "_thread",
        "the consumer thread holding aiokafka's consumer (start_offset, fetch_position)",
        source_mentions="self._thread",
    ),
    # the batch tap (batch_tap.py) replaces the drain loop and keeps its bookkeeping
    Internal(
        "faust.transport.consumer:Fetcher",
        "_fetcher",
        "runs the consumer's drain loop, which the batch tap replaces per instance",
        source_mentions="consumer._drain_messages(self)",
    ),
    Internal(
        "faust.transport.consumer:Consumer",
        "_drain_messages",
        "the loop the batch tap replaces (drain_batches keeps its bookkeeping)",
        parameters=("self", "fetcher"),
    ),
    Internal(
        "faust.transport.consumer:Consumer",
        "_add_gap",
        "offset gaps the tap's drain records, so commits pass them",
        parameters=("self", "tp", "offset_from", "offset_to"),
    ),
    Internal(
        "faust.transport.consumer:Consumer",
        "_read_offset",
        "the read offsets the tap's drain keeps (duplicates after a seek are skipped)",
        source_mentions="self._read_offset = defaultdict(lambda: None)",
    ),
    Internal(
        "faust.transport.consumer:Consumer",
        "_n_acked",
        "acked messages counted towards broker_commit_every by the tap's drain",
        source_mentions="self._n_acked += 1",
    ),
    Internal(
        "faust.transport.consumer:Consumer",
        "_commit_every",
        "broker_commit_every, honoured by the tap's drain",
        source_mentions="self._commit_every = self.app.conf.broker_commit_every",
    ),
    # whole record batches of changes and dead letters (batch_send.py)
    Internal(
        "faust.transport.drivers.aiokafka:Producer",
        "_ensure_producer",
        "the aiokafka producer whose record batches send_batches fills",
        parameters=("self",),
    ),
    Internal(
        "aiokafka.producer.producer:AIOKafkaProducer",
        "_partitioner",
        "each message's partition, as AIOKafkaProducer.send picks it (send_batches)",
        source_mentions="self._partitioner = partitioner",
    ),
)


class FaustInternalsChanged(RuntimeError):
    """The installed Faust or aiokafka no longer has what the worker patches or reads."""


def _resolve(path: str) -> Any:
    module_name, _, qualname = path.partition(":")
    target: Any = __import__(module_name, fromlist=["_"])
    for part in qualname.split("."):
        target = getattr(target, part)
    return target


def problems() -> list[str]:
    """What of :data:`INTERNALS` the installed versions lack (empty when all is in place)."""
    found: list[str] = []
    for internal in INTERNALS:
        name = f"{internal.owner}.{internal.attribute}"
        try:
            owner = _resolve(internal.owner)
        except (ImportError, AttributeError) as exc:
            found.append(f"{internal.owner} is gone ({exc}); needed for {name}: {internal.why}")
            continue
        if internal.source_mentions is not None:
            try:
                source = inspect.getsource(owner)
            except (OSError, TypeError):
                source = ""
            if internal.source_mentions not in source:
                found.append(f"{name} is no longer set by {internal.owner}: {internal.why}")
            continue
        attribute = getattr(owner, internal.attribute, None)
        if attribute is None:
            found.append(f"{name} is gone: {internal.why}")
            continue
        if internal.parameters is not None:
            names = tuple(inspect.signature(_unwrapped(attribute)).parameters)
            if names != internal.parameters:
                found.append(f"{name} now takes {names}, not {internal.parameters}: {internal.why}")
    return found


def check() -> None:
    """Raise :class:`FaustInternalsChanged` naming every internal that moved."""
    found = problems()
    if found:
        raise FaustInternalsChanged(
            "Faust/aiokafka internals the worker relies on changed (pin the versions in "
            "pyproject.toml or update segmentflow/streams/faust_patches.py): " + "; ".join(found)
        )


def _unwrapped(function: Any) -> Any:
    return getattr(function, "__segmentflow_original__", function)


def apply() -> None:
    """Check the internals, then install every patch (idempotent)."""
    check()
    patch_fetch_max_wait()
    patch_fetch_errors()


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

    create.__segmentflow_original__ = original  # type: ignore[attr-defined]

    faust_aiokafka.AIOKafkaConsumerThread._create_worker_consumer = create  # type: ignore
    _fetch_wait_patched = True


#: per app (``id(app)``): called with the error of a failed fetch, or ``None`` after a success
_fetch_listeners: dict[int, Callable[[BaseException | None], None]] = {}
_fetch_errors_patched = False
FETCH_MAX_BACKOFF = 5.0
#: waits after consecutive failed fetches: 0.1 s doubling to FETCH_MAX_BACKOFF
FETCH_BACKOFF = Backoff(base=0.1, cap=FETCH_MAX_BACKOFF, jitter=0.0)


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
) -> Callable[..., Coroutine[Any, Any, Any]]:
    """Wrap Faust's ``AIOKafkaConsumerThread._fetch_records``: an error (or a partition that
    could not be decoded) is reported to the app's listener (:func:`on_fetch`) and followed
    by a capped backoff; a failed call returns no records. ``None`` is reported once fetching
    works again."""
    from aiokafka.errors import ConsumerStoppedError

    failures: dict[int, int] = {}  # consecutive failed fetches per app

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
            failures[app_id] = failures.get(app_id, 0) + 1
            await sleep(FETCH_BACKOFF.raw(failures[app_id]))
        elif failures.pop(app_id, None) is not None and listener is not None:
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


# -- reading the consumer's state ------------------------------------------------------------


async def start_offset(consumer: Any, tp: Any) -> int | None:
    """Where this assignment reads ``tp`` from: the group's committed offset, else the log's
    start. Not the consumer's position: Faust fetches into its buffers long before the worker
    sees a message (and until its seek after a rebalance, the position is the old one), so a
    partition whose messages the worker has not seen yet looked read to its end, and stopped
    holding the clock back."""
    thread = consumer._thread
    kafka = thread._ensure_consumer()
    committed = await thread.call_thread(kafka.committed, tp)
    if committed is not None:
        return int(committed)
    starts = await thread.call_thread(kafka.beginning_offsets, [tp])
    start = starts.get(tp)
    return None if start is None else int(start)


def fetch_position(consumer: Any, tp: Any) -> int | None:
    """aiokafka's fetch position of ``tp`` (``None`` when it cannot be read)."""
    try:
        kafka = consumer._thread._ensure_consumer()
        position: int | None = kafka._subscription.subscription.assignment.state_value(tp).position
    except Exception:
        return None
    return position


def fetch_flags(consumer: Any, tp: Any) -> list[str]:
    """Faust's fetch state of ``tp``: ``paused``, ``buffer-full``, ``inactive`` (empty when it
    fetches; best effort, these sets are private)."""
    flags = [
        name
        for name, tps in (
            ("paused", getattr(consumer, "_paused_partitions", ())),
            ("buffer-full", getattr(consumer, "_buffered_partitions", ())),
        )
        if tp in tps
    ]
    active = getattr(consumer, "_active_partitions", None)
    if active is not None and tp not in active:
        flags.append("inactive")
    return flags
