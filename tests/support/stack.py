"""A :class:`DevStack` for tests whose workers stop together: SIGTERM goes to every worker at
once, then each is reaped (SIGKILL only after a generous limit). A worker needs seconds to shut
down (Faust's shutdown, then the interpreter's exit); one after another, two workers cost twice
that in every test's teardown. Same shutdown path (SIGTERM, graceful), overlapped."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess

from segmentflow.devstack import DevStack

#: seconds a worker may take to exit after SIGTERM before it is killed (a busy machine)
STOP_LIMIT_S = 30.0


def stop_together(procs: list[subprocess.Popen[bytes]], limit: float = STOP_LIMIT_S) -> None:
    """SIGTERM every running process of ``procs``, then reap each (SIGKILL after ``limit`` s)."""
    for proc in procs:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=limit)


class Stack(DevStack):
    """:class:`DevStack` whose workers are stopped together (see the module docstring)."""

    def stop_workers(self) -> None:
        stop_together(self.workers)
        self.workers.clear()
        self.web_ports.clear()
