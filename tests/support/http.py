"""GET a worker's HTTP views patiently: a worker answers between batches, so a request that
times out (or finds the port not yet listening) is retried until a generous overall limit."""

from __future__ import annotations

import time
import urllib.error
from typing import Protocol

#: overall limit of one request (the worker may be busy with a long batch on a loaded machine)
LIMIT_S = 120.0


class HasGet(Protocol):
    """What :func:`get` needs of a stack (``segmentflow.devstack.DevStack``)."""

    def get(self, path: str, index: int = 0, token: str | None = None) -> bytes: ...


def get(
    stack: HasGet,
    path: str,
    index: int = 0,
    token: str | None = None,
    limit: float = LIMIT_S,
    pause: float = 0.5,
) -> bytes:
    """The body of ``GET path`` on worker ``index``, retried (every ``pause`` s) on timeouts and
    refused or reset connections until ``limit`` s passed; an HTTP error status is an answer
    (``urllib.error.HTTPError``, raised at once); ``limit=0`` tries once."""
    deadline = time.monotonic() + limit
    while True:
        try:
            return stack.get(path, index, token=token)
        except urllib.error.HTTPError:
            raise
        except OSError:  # timeout, refused, reset: the worker is busy or (re)starting
            if time.monotonic() > deadline:
                raise
            time.sleep(pause)
