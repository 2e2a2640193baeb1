"""Signals that end a long-running command cleanly (``demo``, ``dev``): SIGTERM and SIGHUP raise
:class:`Stopped` (SIGINT :class:`KeyboardInterrupt`), so ``finally`` clauses stop what was
started. Kept free of heavy imports: ``segmentflow.cli.main`` catches :class:`Stopped` before any
command module is loaded."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from types import FrameType

#: Signals that end ``dev`` and ``demo`` cleanly (everything started is stopped).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP arrived (SIGINT raises `KeyboardInterrupt` as usual)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Turn SIGTERM and SIGHUP into `Stopped` (SIGINT: `KeyboardInterrupt`) in this block, so
    ``finally`` clauses stop child processes; previous handlers come back afterwards."""

    def raise_stopped(signum: int, frame: FrameType | None) -> None:
        raise Stopped(signum)

    previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    signal.signal(signal.SIGTERM, raise_stopped)
    signal.signal(signal.SIGHUP, raise_stopped)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
