"""``segmentflow collect``: the Segment-compatible HTTP collector (CONTRACT §9).

Starts whether or not the broker is up: until Kafka answers, requests and ``/health`` get 503
and one line per connection attempt is logged (capped backoff); then it goes to work.
"""

from __future__ import annotations

import argparse
import logging

from rich.console import Console

from segmentflow.config import ConfigError, Settings


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
    p.add_argument(
        "--max-inflight-bytes",
        type=int,
        help="most body bytes held by all requests at once; beyond, 503 (default 32 MiB)",
    )
    p.add_argument(
        "--header-timeout",
        type=float,
        default=10.0,
        help="seconds a connection may take to send its request headers (default 10)",
    )
    p.add_argument(
        "--body-timeout",
        type=float,
        default=30.0,
        help="seconds a request body may take to arrive; beyond, 408 (default 30)",
    )
    p.add_argument(
        "--max-connections",
        type=int,
        help="most open connections and requests (uvicorn limit_concurrency; default no limit)",
    )
    p.add_argument("--loglevel", default="warning", help="debug, info, warning, error")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, console: Console) -> int:
    from segmentflow.collector import KafkaSink, config_from_settings, create_app
    from segmentflow.collector.server import uvicorn_config

    settings = Settings()
    config = config_from_settings(settings, args.track_map)  # ConfigError -> exit 2
    if args.max_body_bytes:
        config.max_body_bytes = args.max_body_bytes
    if args.max_inflight_bytes:
        config.max_inflight_bytes = args.max_inflight_bytes
    config.body_timeout = args.body_timeout
    if config.max_inflight_bytes < config.max_body_bytes:
        raise ConfigError("--max-inflight-bytes must be at least --max-body-bytes")
    level = getattr(logging, str(args.loglevel).upper(), logging.WARNING)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    host = args.host or settings.collector_host
    port = args.port or settings.collector_port
    app = create_app(config, KafkaSink(settings))
    console.print(
        f"segmentflow collect: http://{host}:{port}/v1/batch -> kafka {settings.kafka_url} "
        f"({len(config.write_keys)} write key(s); OpenAPI at /openapi.json)"
    )
    import uvicorn

    server = uvicorn.Server(
        uvicorn_config(
            app,
            host,
            port,
            header_timeout=args.header_timeout,
            max_connections=args.max_connections,
            log_level=args.loglevel,
        )
    )
    server.run()
    return 0 if server.started else 3
