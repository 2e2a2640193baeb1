"""Faust agents and timers: consume the three input topics in batches, tick the clock."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Hashable
from typing import Any

import faust

from segmentflow.service.processor import InputRecord
from segmentflow.streams.batch_tap import BatchTap
from segmentflow.streams.faust_patches import fetch_flags, fetch_position, start_offset
from segmentflow.streams.runtime import Delivery, SegmentWorker

log = logging.getLogger("segmentflow.worker")


#: seconds between refreshes of the watermark's exact end offsets (and the releases they
#: allow) between clock ticks: a live event waits for its batch or this, not a whole tick
#: (CDNOW-like 10k customers at half the worker's rate: p50/p99 event-to-change 475/942 ms with
#: the 1 s tick alone, 107-129/164-237 ms with this; benchmarks/README.md)
REFRESH_SECONDS = 0.25


def fetched_ends(consumer: Any, tps: list[Any]) -> tuple[dict[Hashable, int], list[Any]]:
    """Exact end offsets: the high-water mark of each partition's latest fetch response (free,
    and right on every broker); and the partitions not fetched yet."""
    exact: dict[Hashable, int] = {}
    unknown = []
    for tp in tps:
        mark = consumer.highwater(tp)
        if mark is None:
            unknown.append(tp)
        else:
            exact[(tp.topic, tp.partition)] = mark
    return exact, unknown


async def listed_ends(consumer: Any, tps: list[Any]) -> dict[Hashable, int]:
    """Guessed end offsets: a ListOffsets answer (Tansu answers it with the start of the last
    record batch + 1, which is wrong), used by the clock only until a fetch reports."""
    if not tps:
        return {}
    listed = await asyncio.wait_for(consumer.highwaters(*tps), timeout=5)
    return {(tp.topic, tp.partition): end for tp, end in listed.items()}


def describe_fetch(consumer: Any, key: Any, worker: SegmentWorker) -> str:
    """How a partition holding the clock stands: what the worker read, the fetcher's position
    and high-water mark, and whether Faust fetches it (for the held-clock warning)."""
    tp = next((t for t in consumer.assignment() if (t.topic, t.partition) == key), None)
    if tp is None:
        return f"{key}: not assigned"
    position = fetch_position(consumer, tp)
    flags = fetch_flags(consumer, tp)
    read = worker.watermark.lag().get(key)
    return (
        f"{tp.topic}/{tp.partition}: {read} unread by the worker, fetch position {position}, "
        f"high-water {consumer.highwater(tp)}, faust {'/'.join(flags) or 'fetching'}"
    )


def delivery(m: Any, kinds: dict[str, str]) -> Delivery:
    """A consumed Faust message as the worker takes it: its record and the message itself
    (the token that acks it)."""
    return Delivery(InputRecord(m.topic, kinds[m.topic], m.partition, m.offset, m.key, m.value), m)


def register(
    app: faust.App, worker: SegmentWorker, tap: BatchTap, tick_seconds: float = 1.0
) -> Any:
    """Attach the intake task (the tap's batches to the worker), the clock timer and the
    rebalance hooks to ``app``; the agent only subscribes the input topics."""
    settings = worker.settings
    topics = app.topic(
        *settings.input_topics.values(), key_serializer="raw", value_serializer="raw"
    )
    kinds = worker.kind_of
    # a batch taken before a rebalance may be handed over after it: drop it (it is read again)
    worker.is_current = lambda message: message.generation_id == app.consumer_generation_id

    @app.agent(topics, name="segmenter")
    async def segmenter(stream: Any) -> None:
        """Subscribes the input topics; their records go to the tap, never to this stream."""
        async for _event in stream.noack():
            raise RuntimeError(
                "an input record reached the Faust agent: the batch tap is not installed "
                "(segmentflow.streams.worker.build installs it; report this as a bug)"
            )

    @app.task  # type: ignore[untyped-decorator]
    async def intake() -> None:
        """The tap's records to the worker, up to ``batch_size`` at a time, waiting up to
        ``batch_within`` for that many (a busy worker finds the next batch full)."""
        while True:
            batch = await tap.take(settings.batch_size, settings.batch_within)
            try:
                await worker.handle_batch([delivery(message, kinds) for message in batch])
            except Exception as exc:  # a bug: unacked, so read again after a restart
                log.exception("batch failed outside the engine; its records are not acked")
                worker.status.last_error = f"worker: {exc.__class__.__name__}: {exc}"[:300]

    def inputs() -> list[Any]:
        """The assigned partitions of the input topics."""
        return [tp for tp in app.consumer.assignment() if tp.topic in kinds]

    positioned: set[tuple[str, int]] = set()  # start offsets known (per assignment)
    said = {"held": 0.0}

    @app.timer(tick_seconds)  # type: ignore[untyped-decorator]
    async def clock() -> None:
        consumer = app.consumer
        tps = inputs()
        if not tps or app.rebalancing:  # nothing is owned until the rebalance is over
            return
        exact, unknown = fetched_ends(consumer, tps)
        guesses: dict[Hashable, int] = {}
        try:
            guesses = await listed_ends(consumer, unknown)
        except Exception as exc:  # broker unreachable: report unhealthy, retry next tick
            worker.report_failure("broker", exc)
        # partitions not read yet: where does this group stand? Asked once per assignment
        # (an empty partition is never "read"); one slow answer must not stop the tick, which
        # passes the end offsets to the clock
        for tp in tps:
            key = (tp.topic, tp.partition)
            if key in positioned or not worker.owns(key) or worker.watermark.has_read(key):
                continue
            try:
                position = await asyncio.wait_for(start_offset(consumer, tp), timeout=5)
            except Exception as exc:
                log.warning("start offset of %s/%s unknown (%s); retrying", *key, exc)
                break
            if position is not None and worker.owns(key):  # still, after the await
                worker.watermark.set_position(key, position)
                positioned.add(key)
        await worker.tick(exact, guesses)
        held, seconds = worker.clock_held()
        if seconds > settings.idle_timeout and time.monotonic() - said["held"] > 60:
            said["held"] = time.monotonic()
            log.warning(
                "clock held for %.0f s, %d events wait; held by %s",
                seconds,
                held,
                "; ".join(describe_fetch(consumer, tp, worker) for tp in worker.watermark.holding())
                or "nothing",
            )

    @app.timer(REFRESH_SECONDS)  # type: ignore[untyped-decorator]
    async def refresh() -> None:
        """The exact end offsets to the watermark between clock ticks (free: read from the
        latest fetch responses), and what that releases."""
        if app.rebalancing:
            return
        exact, _ = fetched_ends(app.consumer, inputs())
        if exact:
            await worker.refresh_ends(exact)

    probe: dict[str, Any] = {"future": None, "since": 0.0, "tick": 0.0}

    @app.timer(tick_seconds)  # type: ignore[untyped-decorator]
    async def broker_probe() -> None:
        """Health of the broker link: one ListOffsets round trip in flight at a time (its answer
        is not used); unhealthy when it fails or stays unanswered for 3 s. The clock above reads
        cached high-water marks and may wait behind a batch whose sends are stuck, so it cannot
        tell; this timer never waits (and does not blame the broker when the loop was busy)."""
        now = time.monotonic()
        stalled = now - probe["tick"] > 3 * tick_seconds
        probe["tick"] = now
        tps = inputs()
        future = probe["future"]
        if future is not None and future.done():
            probe["future"] = None
            error = future.exception() if not future.cancelled() else asyncio.CancelledError()
            if error is None:
                worker.report_recovery("broker")
            else:
                worker.report_failure("broker", error)  # unhealthy, counted in segmentflow_retries
        elif future is not None:
            if stalled:
                probe["since"] = now
            elif now - probe["since"] > 3.0:
                waited = now - probe["since"]
                worker.report_failure("broker", TimeoutError(f"no answer for {waited:.0f} s"))
        if probe["future"] is None and tps:
            probe["future"] = asyncio.ensure_future(app.consumer.highwaters(tps[0]))
            probe["since"] = now

    @app.timer(settings.metrics_every)  # type: ignore[untyped-decorator]
    async def ops_snapshot() -> None:
        try:
            await asyncio.wait_for(worker.publish_ops_snapshot(), timeout=10)
        except Exception as exc:  # best effort: the next one comes soon
            log.warning("ops snapshot not published: %s", exc)

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def on_assigned(sender: Any, assigned: Any, **kwargs: Any) -> None:
        positioned.clear()
        await worker.assigned([(tp.topic, tp.partition) for tp in assigned])
        log.info("assigned %d partitions", len(assigned))

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def on_revoked(sender: Any, revoked: Any, **kwargs: Any) -> None:
        positioned.clear()
        tap.clear()  # fetched again from the committed offsets after the rebalance
        await worker.revoked()  # waits for the batch under way to stop

    return segmenter
