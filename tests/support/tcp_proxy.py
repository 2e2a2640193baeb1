"""A TCP proxy for fault tests: forwards 127.0.0.1:<port> to a target and can cut the link.

``cut()`` closes every open connection and stops listening (new connections are refused);
``restore()`` listens again on the same port. ``lose_replies(marker, times)`` forwards the next
``times`` client requests containing ``marker`` (e.g. ``b"EXEC"``), lets the server execute them,
then drops the connection before the reply comes back: the client cannot tell whether its
request took effect. It runs an asyncio loop in a daemon thread, so the test thread stays free
to drive processes and poll HTTP endpoints.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from types import TracebackType
from typing import Self

_HOST = "127.0.0.1"


class TcpProxy:
    """Forward ``127.0.0.1:port`` to ``target_host:target_port``.

    Parameters
    ----------
    target_port
        Port of the real service on ``target_host``.
    port
        Port to listen on; a free one by default (known before `start`, so it can be
        advertised to clients before the target starts).
    """

    def __init__(self, target_port: int, port: int | None = None, target_host: str = _HOST) -> None:
        self.target = (target_host, target_port)
        self.port = port or _free_port()
        self.connections = 0  # accepted since start
        self.cuts = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, daemon=True, name="tcp-proxy"
        )
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._lose: tuple[bytes, int] = (b"", 0)
        self.replies_lost = 0
        self.lost_requests: list[bytes] = []  # the requests whose replies were lost

    # -- public API (called from the test thread) ---------------------------------------------

    def start(self) -> Self:
        """Start the loop thread and listen."""
        self._thread.start()
        self._call(self._listen())
        return self

    def cut(self) -> None:
        """Close every connection and stop listening: the target is unreachable."""
        self._call(self._cut())
        self.cuts += 1

    def restore(self) -> None:
        """Listen again on the same port."""
        self._call(self._listen())

    def lose_replies(self, marker: bytes, times: int = 1) -> None:
        """Drop the connection after forwarding each of the next ``times`` requests containing
        ``marker`` (the server executes them; their replies are lost)."""
        self._lose = (marker, times)

    def stop(self) -> None:
        """Close everything and stop the loop thread."""
        if not self._thread.is_alive():
            return
        self._call(self._cut())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- loop side -----------------------------------------------------------------------------

    def _call(self, coro: object) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)  # type: ignore[arg-type]

    async def _listen(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(
                self._handle, _HOST, self.port, reuse_address=True
            )

    async def _cut(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._writers):
            _abort(writer)
        self._writers.clear()
        if server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), timeout=2)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._server is None:  # accepted just as the link was cut
            _abort(writer)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            _abort(writer)
            return
        self.connections += 1
        self._writers.update((writer, up_writer))
        try:
            await asyncio.gather(
                self._upstream(reader, up_writer, writer), _pipe(up_reader, writer)
            )
        finally:
            for w in (writer, up_writer):
                self._writers.discard(w)
                _abort(w)

    async def _upstream(
        self, reader: asyncio.StreamReader, up: asyncio.StreamWriter, client: asyncio.StreamWriter
    ) -> None:
        """Client to server, losing the reply of marked requests."""
        try:
            while data := await reader.read(65536):
                marker, times = self._lose
                if times and marker in data:
                    self._lose = (marker, times - 1)
                    _abort(client)  # the reply has nowhere to go
                    up.write(data)
                    await up.drain()
                    await asyncio.sleep(0.2)  # let the server read and execute it
                    self.replies_lost += 1
                    self.lost_requests.append(data)
                    break
                up.write(data)
                await up.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            _abort(up)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (OSError, asyncio.IncompleteReadError):
        pass
    finally:
        _abort(writer)


def _abort(writer: asyncio.StreamWriter) -> None:
    transport = writer.transport
    if not transport.is_closing():
        transport.abort()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_HOST, 0))
        port: int = sock.getsockname()[1]
        return port
