"""Bootstrap of a worker process: settings -> store, processor, Faust app, agents, views."""

from __future__ import annotations

from typing import Any

import faust

from segmentflow import bootstrap
from segmentflow.config import Settings
from segmentflow.streams import agents, web
from segmentflow.streams.app import create_app
from segmentflow.streams.runtime import SegmentWorker


def build(settings: Settings, **app_overrides: Any) -> tuple[faust.App, SegmentWorker]:
    """Wire a worker from ``settings``; nothing starts until the app runs."""
    config = settings.segment_config()
    processor = bootstrap.processor(settings, config, outbox=True)
    if config.rfm.enabled:
        processor.store.attach_ranks(processor.engine.ranks)  # type: ignore[attr-defined]
    app = create_app(settings, partitions=settings.partitions, **app_overrides)

    async def send(topic: str, key: bytes | None, value: bytes) -> object:
        pending = await app.producer.send(topic, key, value, None, None, None)
        return await pending

    streams: list[Any] = []

    async def ack(event: Any) -> object:
        return await streams[0].ack(event) if streams else event.ack()

    worker = SegmentWorker(settings, processor, send, ack)
    if worker.persona is not None:
        worker.persona.refresh()  # a restart continues with the stored model
    agents.register(app, worker, on_stream=streams.append)
    web.register(app, worker)
    return app, worker


def run(settings: Settings, loglevel: str = "WARNING") -> None:
    """Run a worker until stopped (SIGINT/SIGTERM)."""
    app, _ = build(settings)
    faust.Worker(app, loglevel=loglevel, quiet=True).execute_from_commandline()
