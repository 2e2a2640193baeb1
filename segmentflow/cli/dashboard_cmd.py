"""``segmentflow dashboard``: a live dashboard of populations, lifecycle flows and dead letters.

Reads the worker at ``SEGMENTFLOW_WORKER_URL`` (default http://127.0.0.1:6066; bearer
``SEGMENTFLOW_API_TOKEN`` when set) and follows ``segment-changes`` on ``SEGMENTFLOW_KAFKA_URL``.
Serves on ``SEGMENTFLOW_DASHBOARD_HOST`` (127.0.0.1) : ``SEGMENTFLOW_DASHBOARD_PORT`` (8090).
With ``SEGMENTFLOW_API_TOKEN`` set every page and API but ``/health`` needs that token (a sign-in
form for browsers, bearer for scripts).
"""

from __future__ import annotations

import argparse
import logging
import os

from rich.console import Console

from segmentflow.config import Settings


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("dashboard", help="serve a live dashboard of segments and changes")
    p.add_argument(
        "--host",
        default=os.environ.get("SEGMENTFLOW_DASHBOARD_HOST", "127.0.0.1"),
        help="bind address (default 127.0.0.1; with SEGMENTFLOW_API_TOKEN set the pages ask "
        "for that token)",
    )
    p.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("SEGMENTFLOW_DASHBOARD_PORT", "8090")),
        help="port (default 8090)",
    )
    p.add_argument("--worker-url", help="worker base URL (default $SEGMENTFLOW_WORKER_URL)")
    p.add_argument("--poll", type=float, help="seconds between worker polls (default 2)")
    p.add_argument(
        "--from-beginning",
        action="store_true",
        help="read segment-changes from the earliest offset (default: only new changes)",
    )
    p.add_argument("--no-kafka", action="store_true", help="do not follow segment-changes")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, console: Console) -> int:
    from aiohttp import web

    from segmentflow.dashboard.app import DashboardOptions, create_app

    logging.basicConfig(level=logging.WARNING)
    settings = Settings()
    options = DashboardOptions.from_env(
        settings,
        worker_url=args.worker_url.rstrip("/") if args.worker_url else None,
        poll_s=args.poll,
        from_beginning=args.from_beginning or None,
        kafka=False if args.no_kafka else None,
    )
    console.print(
        f"segmentflow dashboard: http://{args.host}:{args.port}/ (worker {options.worker_url}, "
        f"kafka {settings.kafka_url if options.kafka else 'off'}"
        + (", sign-in with SEGMENTFLOW_API_TOKEN" if options.api_token else "")
        + ")"
    )
    web.run_app(create_app(settings, options), host=args.host, port=args.port, print=None)
    return 0
