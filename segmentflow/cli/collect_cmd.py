"""``segmentflow collect``: the Segment-compatible HTTP collector (CONTRACT §9)."""

from __future__ import annotations

import argparse
import asyncio

from rich.console import Console

from segmentflow.config import Settings
from segmentflow.streams.kafka_clients import BrokerUnavailable


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "collect", help="serve the Segment HTTP Tracking API and produce events to Kafka"
    )
    p.add_argument("--host", help="bind address (default SEGMENTFLOW_COLLECTOR_HOST, 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default SEGMENTFLOW_COLLECTOR_PORT, 8088)")
    p.add_argument(
        "--track-map",
        help="JSON object or JSON/YAML file mapping extra track names to event types "
        "(default SEGMENTFLOW_COLLECTOR_TRACK_MAP)",
    )
    p.add_argument("--max-body-bytes", type=int, help="largest request body (default 2 MiB)")
    p.add_argument("--loglevel", default="warning", help="debug, info, warning, error")
    p.set_defaults(func=run)


async def _probe(settings: Settings) -> None:
    from segmentflow.collector.sink import KafkaSink

    sink = KafkaSink(settings, connect_timeout=10.0)
    await sink.start()
    await sink.stop()


def run(args: argparse.Namespace, console: Console) -> int:
    import uvicorn

    from segmentflow.collector import KafkaSink, config_from_settings, create_app
    from segmentflow.collector.sink import SinkError

    settings = Settings()
    config = config_from_settings(settings, args.track_map)  # ConfigError -> exit 2
    if args.max_body_bytes:
        config.max_body_bytes = args.max_body_bytes
    try:
        asyncio.run(_probe(settings))  # a clear message when Kafka is down
    except SinkError as exc:
        raise BrokerUnavailable(str(exc)) from None
    host = args.host or settings.collector_host
    port = args.port or settings.collector_port
    app = create_app(config, KafkaSink(settings))
    console.print(
        f"segmentflow collect: http://{host}:{port}/v1/batch -> kafka {settings.kafka_url} "
        f"({len(config.write_keys)} write key(s); OpenAPI at /openapi.json)"
    )
    server = uvicorn.Server(
        uvicorn.Config(app, host=host, port=port, log_level=args.loglevel, lifespan="on")
    )
    server.run()
    return 0 if server.started else 3
