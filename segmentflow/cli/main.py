"""The ``segmentflow`` console command (CONTRACT §5).

Subcommand modules load lazily: ``segmentflow --help`` lists every command from
:data:`COMMANDS` without importing any of them, and ``segmentflow X ...`` imports only X's module
(so ``--help``, ``tail`` or ``produce`` do not pay for the engine, scipy, CEL or River).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

from rich.console import Console

from segmentflow.cli.signals import Stopped

#: each command module (under ``segmentflow.cli``) with the commands its ``add_parser`` adds and
#: their one-line help, in ``--help`` order (tests/unit/cli/test_main.py checks these against
#: the modules)
COMMANDS: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    (
        "demo_cmd",
        (
            ("demo", "embedded broker + Redis + worker + a synthetic stream"),
            ("dev", "embedded broker + Redis + worker, until Ctrl-C"),
        ),
    ),
    (
        "worker_cmd",
        (
            (
                "worker",
                "run a worker configured from the environment (SIGHUP: reload SEGMENTFLOW_CONFIG)",
            ),
        ),
    ),
    (
        "replay_cmd",
        (("replay", "run the engine over a JSONL file of events, in event time"),),
    ),
    ("produce_cmd", (("produce", "publish a JSONL file of events to the input topics"),)),
    ("tail_cmd", (("tail", "print segment changes as they arrive"),)),
    (
        "query_cmd",
        (
            ("inspect", "a customer's state, values per dimension, and why"),
            ("segments", "population of every segment of every dimension"),
        ),
    ),
    (
        "members_cmd",
        (("members", "the customers currently in a segment (an audience), one per line"),),
    ),
    (
        "migrate_cmd",
        (
            (
                "migrate-layout",
                "bring the namespace's Redis keys to layout 3 (upgrades from layout 1 or 2)",
            ),
        ),
    ),
    (
        "preview_cmd",
        (("preview", "how many customers a rule segment that is not deployed yet would hold"),),
    ),
    (
        "forget_cmd",
        (("forget", "erase a customer (through the worker that owns it) and emit final nulls"),),
    ),
    (
        "collect_cmd",
        (("collect", "serve the Segment HTTP Tracking API and produce events to Kafka"),),
    ),
    ("triggers_cmd", (("triggers", "deliver matching segment changes to HTTP webhooks"),)),
    ("dashboard_cmd", (("dashboard", "serve a live dashboard of segments and changes"),)),
    (
        "fit_clv_cmd",
        (("fit-clv", "fit the BG/NBD and Gamma-Gamma models on the orders of a JSONL file"),),
    ),
)

#: errors a command raises to end with a message and an exit code, named by (module, class) so
#: that catching them imports nothing (an error of a module never imported cannot be raised)
EXPECTED_ERRORS: dict[tuple[str, str], tuple[str, int]] = {
    ("segmentflow.config", "ConfigError"): ("[red]configuration error:[/red]", 2),
    ("segmentflow.service.replay", "ReplayError"): ("[red]replay:[/red]", 2),
    ("segmentflow.streams.kafka_clients", "BrokerUnavailable"): ("[red]error:[/red]", 3),
    ("segmentflow.bootstrap", "RedisUnavailable"): ("[red]error:[/red]", 3),
    ("segmentflow.state.base", "StoreUnavailable"): ("[red]state store unavailable:[/red]", 3),
    ("segmentflow.state.migrate_layout", "LayoutError"): ("[red]error:[/red]", 3),
    # Redis (or a cluster node: CLUSTERDOWN, a slot not covered) failed mid-command: run it again
    ("redis.exceptions", "RedisError"): ("[red]Redis error (retry shortly):[/red]", 3),
    ("redis.exceptions", "RedisClusterException"): ("[red]Redis Cluster error:[/red]", 3),
}


def _parser(load: Callable[[str], bool]) -> argparse.ArgumentParser:
    """Every subcommand; the modules for which ``load(module)`` is true add theirs with all
    their arguments, the others only by name and help."""
    parser = argparse.ArgumentParser(
        prog="segmentflow", description="Real-time customer segmentation on Kafka."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for module, commands in COMMANDS:
        if load(module):
            importlib.import_module(f"segmentflow.cli.{module}").add_parser(sub)
        else:
            for name, help_text in commands:
                sub.add_parser(name, help=help_text, add_help=False)
    return parser


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand and all their arguments (imports every
    command module; :func:`main` loads only the chosen one's)."""
    return _parser(lambda module: True)


def chosen_module(argv: Sequence[str]) -> str | None:
    """The module of the command ``argv`` names (its first argument that is not an option: the
    top-level parser has no option but ``--help``), ``None`` for none or an unknown one."""
    command = next((arg for arg in argv if not arg.startswith("-")), None)
    return next((m for m, commands in COMMANDS for name, _ in commands if name == command), None)


def parser_for(argv: Sequence[str]) -> argparse.ArgumentParser:
    """The parser :func:`main` uses for ``argv``: every command listed, only the chosen
    command's module imported."""
    module = chosen_module(argv)
    return _parser(lambda candidate: candidate == module)


def expected(exc: BaseException) -> tuple[str, int] | None:
    """The message prefix and exit code of an :data:`EXPECTED_ERRORS` error (or a subclass)."""
    for cls in type(exc).__mro__:
        found = EXPECTED_ERRORS.get((cls.__module__, cls.__qualname__))
        if found is not None:
            return found
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    arguments = sys.argv[1:] if argv is None else list(argv)
    try:
        args = parser_for(arguments).parse_args(arguments)
    except SystemExit as exc:  # --help (0) or a usage error (2), printed by argparse
        return int(exc.code or 0)
    console = Console(stderr=False)
    try:
        code: int = args.func(args, console)
    except Stopped as exc:  # SIGTERM/SIGHUP during demo: everything started was stopped
        return 128 + exc.signum
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        handled = expected(exc)
        if handled is None:
            raise
        prefix, exit_code = handled
        Console(stderr=True).print(f"{prefix} {exc}")
        return exit_code
    return code


if __name__ == "__main__":
    sys.exit(main())
