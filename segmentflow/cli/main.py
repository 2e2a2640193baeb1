"""The ``segmentflow`` console command (CONTRACT §5)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from rich.console import Console

from segmentflow.bootstrap import RedisUnavailable
from segmentflow.cli import (
    collect_cmd,
    dashboard_cmd,
    demo_cmd,
    fit_clv_cmd,
    forget_cmd,
    members_cmd,
    preview_cmd,
    produce_cmd,
    query_cmd,
    replay_cmd,
    tail_cmd,
    triggers_cmd,
    worker_cmd,
)
from segmentflow.cli.demo_cmd import Stopped
from segmentflow.config import ConfigError
from segmentflow.service.replay import ReplayError
from segmentflow.streams.kafka_clients import BrokerUnavailable

COMMANDS = [
    demo_cmd,
    worker_cmd,
    replay_cmd,
    produce_cmd,
    tail_cmd,
    query_cmd,
    members_cmd,
    preview_cmd,
    forget_cmd,
    collect_cmd,
    triggers_cmd,
    dashboard_cmd,
    fit_clv_cmd,
]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="segmentflow", description="Real-time customer segmentation on Kafka."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for module in COMMANDS:
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = build_parser().parse_args(argv)
    console = Console(stderr=False)
    try:
        code: int = args.func(args, console)
    except ConfigError as exc:
        Console(stderr=True).print(f"[red]configuration error:[/red] {exc}")
        return 2
    except ReplayError as exc:
        Console(stderr=True).print(f"[red]replay:[/red] {exc}")
        return 2
    except (BrokerUnavailable, RedisUnavailable) as exc:
        Console(stderr=True).print(f"[red]error:[/red] {exc}")
        return 3
    except Stopped as exc:  # SIGTERM/SIGHUP during demo: everything started was stopped
        return 128 + exc.signum
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
