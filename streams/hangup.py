"""SIGHUP: the worker re-reads ``SEGMENTFLOW_CONFIG`` and applies it live (CONTRACT §6).

A file that does not load (missing, bad YAML, unknown key, a rule that does not compile, a
custom dimension that cannot be imported) or a change that needs a restart is logged with what
is wrong, and the worker goes on with the configuration it has: a reload never stops it.
Signals that arrive while a reload runs are folded into one more reload after it; one that
arrives during start-up (:func:`catch_early`, before the event loop's handler is installed) is
applied once the worker runs.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from types import FrameType

import faust

from segmentflow.config import Settings
from segmentflow.streams.runtime import SegmentWorker

log = logging.getLogger("segmentflow.worker")
#: a SIGHUP arrived before the worker's event loop handled them
_early = {"hup": False}


def catch_early() -> None:
    """Until the worker runs, note a SIGHUP instead of dying of it (its default action)."""

    def note(_signum: int, _frame: FrameType | None) -> None:
        _early["hup"] = True

    signal.signal(signal.SIGHUP, note)


async def reload_config(worker: SegmentWorker, settings: Settings) -> bool:
    """Load the config file again and switch ``worker`` to it; ``False`` (logged) when the old
    configuration stays."""
    source = settings.config or "(no SEGMENTFLOW_CONFIG: the defaults)"
    try:
        config = await asyncio.to_thread(settings.segment_config)
        why = await worker.reload(config)
    except Exception as exc:  # whatever the file holds, the worker keeps running
        log.error(
            "SIGHUP: config %s not applied, the worker goes on with the previous one; fix the "
            "file and send SIGHUP again: %s",
            source,
            exc,
        )
        return False
    if why is not None:
        log.error("SIGHUP: config %s not applied: %s", source, why)
        return False
    walk = worker.config_walk
    log.warning(
        "SIGHUP: config %s applied; %s",
        source,
        "re-evaluating stored customers" if not walk.done else "nothing to re-evaluate",
    )
    return True


class Hangup:
    """Runs one reload at a time; a SIGHUP during a reload asks for one more after it."""

    def __init__(self, worker: SegmentWorker, settings: Settings) -> None:
        self.worker = worker
        self.settings = settings
        self.task: asyncio.Task[None] | None = None
        self.again = False
        #: reloads applied / refused (tests and logs)
        self.applied = 0
        self.refused = 0

    def signal(self) -> None:
        """The SIGHUP handler (on the event loop)."""
        if self.task is not None and not self.task.done():
            self.again = True
            return
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            self.again = False
            if await reload_config(self.worker, self.settings):
                self.applied += 1
            else:
                self.refused += 1
            if not self.again:
                return


def register(app: faust.App, worker: SegmentWorker, settings: Settings) -> Hangup:
    """Install the SIGHUP handler once ``app``'s event loop runs (the main thread's)."""
    hangup = Hangup(worker, settings)

    @app.task  # type: ignore[untyped-decorator]
    async def install_sighup() -> None:
        try:
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, hangup.signal)
        except (NotImplementedError, RuntimeError, ValueError) as exc:  # not the main thread
            log.warning("SIGHUP reload not available here (%s); restart to change the config", exc)
            return
        if _early["hup"]:  # the file may have changed after the worker read it
            _early["hup"] = False
            hangup.signal()

    return hangup
