"""An embedded Redis Cluster for tests and development (issue 17).

:class:`EmbeddedRedisCluster` starts ``primaries * (1 + replicas)`` ``redis-server
--cluster-enabled yes`` processes on free ports of 127.0.0.1 (each with its own directory under
one temporary directory, memory-only), joins them with ``redis-cli --cluster create
--cluster-replicas N --cluster-yes``, and waits until every node reports ``cluster_state:ok``,
agrees on the slot map and every replica's link to its primary is up. Nodes are stopped by PID;
:meth:`EmbeddedRedisCluster.kill` kills one (SIGKILL) so tests can watch its replica take over;
:meth:`EmbeddedRedisCluster.move_slot` moves a slot with its keys (a reshard).

Examples
--------
>>> with EmbeddedRedisCluster() as cluster:  # doctest: +SKIP
...     client = cluster.client()
...     client.set("{ns:p7}:s:c1", b"x")
...     cluster.kill(cluster.primary_for("{ns:p7}:s:c1"))
...     promoted = cluster.wait_failover()
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import redis
from redis.cluster import ClusterNode as ClientNode
from redis.cluster import RedisCluster
from redis.crc import key_slot

from segmentflow.embedded import (
    _HOST,
    EmbeddedStartError,
    Managed,
    _Child,
    _redis_binary,
    _tail,
    free_port,
)

__all__ = ["ClusterNode", "EmbeddedRedisCluster", "slot_of"]


def slot_of(key: str | bytes) -> int:
    """The cluster slot (0..16383) of ``key``: CRC16 of its hash tag or the whole key.

    Examples
    --------
    >>> slot_of("{ns:p7}:s:c1") == slot_of("{ns:p7}:due")
    True
    >>> slot_of("ns:s:c1") == slot_of("ns:pop")
    False
    """
    return int(key_slot(key.encode() if isinstance(key, str) else key))


def _cli_binary(cli: str | None, server: str) -> str:
    if cli:
        return cli
    beside = Path(server).with_name("redis-cli")
    if beside.exists() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("redis-cli")
    if found:
        return found
    raise EmbeddedStartError(
        "No redis-cli binary found next to redis-server or on PATH: it creates the cluster "
        "(`redis-cli --cluster create`). Install the Redis tools (`apt-get install "
        "redis-tools`, `brew install redis`) or pass cli=/path/to/redis-cli."
    )


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """One line of ``CLUSTER NODES`` as the node itself sees it."""

    node_id: str
    port: int
    primary: bool
    primary_id: str | None
    failed: bool
    slots: tuple[tuple[int, int], ...]


def _parse_nodes(text: str) -> list[NodeInfo]:
    """The lines of a ``CLUSTER NODES`` reply.

    Examples
    --------
    >>> line = "a1 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460 5462"
    >>> _parse_nodes(line)[0].slots
    ((0, 5460), (5462, 5462))
    """
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 8:
            continue
        flags = set(parts[2].split(","))
        port = int(parts[1].split("@", 1)[0].rsplit(":", 1)[1])
        slots = []
        for item in parts[8:]:
            if item.startswith("["):  # a slot being migrated or imported
                continue
            lo, _, hi = item.partition("-")
            slots.append((int(lo), int(hi or lo)))
        out.append(
            NodeInfo(
                node_id=parts[0],
                port=port,
                primary="master" in flags,
                primary_id=None if parts[3] == "-" else parts[3],
                failed=bool(flags & {"fail", "fail?"}),
                slots=tuple(slots),
            )
        )
    return out


class ClusterNode(_Child):
    """One ``redis-server --cluster-enabled yes`` process of the cluster.

    Parameters
    ----------
    binary
        Path of ``redis-server``.
    data_dir
        Its working directory (``nodes.conf`` lives there).
    node_timeout_ms
        ``cluster-node-timeout``: how long a primary may be unreachable before its replica is
        promoted.
    """

    def __init__(self, binary: str, data_dir: Path, node_timeout_ms: int) -> None:
        self.binary = binary
        self.data_dir = data_dir
        self.node_timeout_ms = node_timeout_ms
        self.port = 0
        self.bus_port = 0

    @property
    def address(self) -> str:
        """``127.0.0.1:PORT``."""
        return f"{_HOST}:{self.port}"

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT`` (a cluster node has only database 0)."""
        return f"redis://{_HOST}:{self.port}"

    def connect(self, timeout: float = 5.0) -> redis.Redis[bytes]:
        """A plain (non-cluster) client of this node alone."""
        return redis.Redis(
            host=_HOST, port=self.port, socket_timeout=timeout, socket_connect_timeout=timeout
        )

    def launch(self) -> None:
        """Start the process on a fresh free port and bus port (``cluster-port``)."""
        self.port, self.bus_port = free_port(), free_port()
        while self.bus_port == self.port:
            self.bus_port = free_port()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        argv = [
            self.binary,
            "--port",
            str(self.port),
            "--cluster-port",
            str(self.bus_port),
            "--bind",
            _HOST,
            "--protected-mode",
            "yes",
            "--daemonize",
            "no",
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            str(self.node_timeout_ms),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.data_dir),
        ]
        self._spawn(argv, "segmentflow-redis-cluster-", dict(os.environ))

    def answers(self) -> bool:
        """Whether the node answers PING now."""
        try:
            client = self.connect(timeout=0.5)
            try:
                return bool(client.ping())
            finally:
                client.close()
        except (redis.RedisError, OSError):
            return False

    def info(self, command: str, *args: str) -> str:
        """A text reply (``CLUSTER INFO``, ``CLUSTER NODES``)."""
        client = self.connect()
        try:
            reply = client.execute_command(command, *args)
        finally:
            client.close()
        return reply.decode() if isinstance(reply, bytes) else str(reply)

    def replication(self) -> dict[str, Any]:
        """``INFO replication`` as redis-py parses it (``role``, ``master_repl_offset``,
        ``slave0`` ...)."""
        client = self.connect()
        try:
            return dict(client.info("replication"))
        finally:
            client.close()

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to the process (by PID) and reap it (a crash, not a shutdown)."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, sig)
        proc.wait(timeout=30)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the process by PID (SIGTERM, then SIGKILL)."""
        self._stop_child(timeout, keep_log=False)


class EmbeddedRedisCluster(Managed):
    """A Redis Cluster of ``primaries`` primaries with ``replicas`` replicas each, on 127.0.0.1.

    Parameters
    ----------
    primaries
        Number of primaries (at least 3, as ``redis-cli --cluster create`` requires).
    replicas
        Replicas per primary.
    binary, cli
        Paths of ``redis-server`` and ``redis-cli`` (found on ``PATH`` by default).
    node_timeout_ms
        ``cluster-node-timeout`` (short, so a killed primary is replaced within seconds).
    startup_timeout
        Overall seconds allowed for the cluster to form (generous: busy machines are slow).
    """

    def __init__(
        self,
        primaries: int = 3,
        replicas: int = 1,
        *,
        binary: str | None = None,
        cli: str | None = None,
        node_timeout_ms: int = 2000,
        startup_timeout: float = 120.0,
    ) -> None:
        if primaries < 3:
            raise ValueError(f"a Redis Cluster needs at least 3 primaries, not {primaries}")
        if replicas < 0:
            raise ValueError(f"replicas must be 0 or more, not {replicas}")
        self.primaries_wanted = primaries
        self.replicas_wanted = replicas
        self._binary = binary
        self._cli = cli
        self.node_timeout_ms = node_timeout_ms
        self.startup_timeout = startup_timeout
        self.nodes: list[ClusterNode] = []
        self._dir: Path | None = None
        self._clients: list[RedisCluster[bytes]] = []

    # -- addresses ---------------------------------------------------------------------------

    @property
    def seeds(self) -> list[str]:
        """``127.0.0.1:PORT`` of every node (seed nodes for a cluster client)."""
        return [node.address for node in self.nodes]

    @property
    def urls(self) -> list[str]:
        """``redis://127.0.0.1:PORT`` of every node."""
        return [node.url for node in self.nodes]

    @property
    def url(self) -> str:
        """``redis+cluster://127.0.0.1:P1,127.0.0.1:P2,.../``: every node as a seed, the
        ``SEGMENTFLOW_REDIS_URL`` form (:func:`segmentflow.state.client.connect`)."""
        if not self.nodes:
            raise RuntimeError("cluster not started: call start() or use it as a context")
        return f"redis+cluster://{','.join(self.seeds)}/"

    def live(self) -> list[ClusterNode]:
        """The nodes whose process runs."""
        return [node for node in self.nodes if node.running()]

    def client(self, **kwargs: Any) -> RedisCluster[bytes]:
        """A ``redis.cluster.RedisCluster`` with every live node as a seed (closed by
        :meth:`stop`; ``kwargs`` go to it).

        On a connection error or ``CLUSTERDOWN`` it reloads the slot map and tries again, a
        few times and without waiting in between (redis-py 8's sync client uses its ``retry``
        only for the count): during a failover (about ``node_timeout_ms`` plus an election)
        callers must retry with a backoff of their own, as the worker does for any Redis
        error."""
        seeds = [ClientNode(_HOST, node.port) for node in self.live()]
        kwargs.setdefault("socket_timeout", 10)
        kwargs.setdefault("socket_connect_timeout", 2)
        client: RedisCluster[bytes] = RedisCluster(startup_nodes=seeds, **kwargs)
        self._clients.append(client)
        return client

    # -- start / stop ------------------------------------------------------------------------

    def start(self) -> Self:
        """Start the nodes, create the cluster and wait until it serves every slot.

        Raises
        ------
        EmbeddedStartError
            A binary is missing, a node did not start, or the cluster did not form in
            ``startup_timeout`` seconds (the message holds the logs to look at).
        """
        server = _redis_binary(self._binary)
        cli = _cli_binary(self._cli, server)
        self._dir = Path(tempfile.mkdtemp(prefix="segmentflow-redis-cluster-"))
        deadline = time.monotonic() + self.startup_timeout
        total = self.primaries_wanted * (1 + self.replicas_wanted)
        self.nodes = [
            ClusterNode(server, self._dir / f"node{i}", self.node_timeout_ms) for i in range(total)
        ]
        for node in self.nodes:
            self._start_node(node, deadline)
        self._create(cli, deadline)
        self.wait_ok(max(1.0, deadline - time.monotonic()))
        return self

    def _start_node(self, node: ClusterNode, deadline: float) -> None:
        for _attempt in range(3):  # a free port may be taken by someone else meanwhile
            node.launch()
            while node.running() and not node.answers():
                if time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            if node.running() and node.answers():
                return
            log = _tail(node.log_path)
            node.stop()
            if time.monotonic() > deadline:
                break
        raise EmbeddedStartError(
            f"redis-server --cluster-enabled did not start on 127.0.0.1 (last log):\n{log}"
        )

    def _create(self, cli: str, deadline: float) -> None:
        argv = [
            cli,
            "--cluster",
            "create",
            *self.seeds,
            "--cluster-replicas",
            str(self.replicas_wanted),
            "--cluster-yes",
        ]
        try:
            done = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=max(5.0, deadline - time.monotonic()),
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise EmbeddedStartError(
                f"`{' '.join(argv)}` did not finish in time: the machine may be overloaded; "
                "raise startup_timeout"
            ) from exc
        if done.returncode != 0:
            out = (done.stdout + done.stderr).decode(errors="replace")[-3000:]
            raise EmbeddedStartError(f"`{' '.join(argv)}` failed ({done.returncode}):\n{out}")

    def stop(self, timeout: float = 5.0) -> None:
        """Close the clients handed out, stop every node by PID, remove the directory."""
        for client in self._clients:
            with contextlib.suppress(Exception):
                client.close()
        self._clients.clear()
        for node in self.nodes:
            node.stop(timeout)
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    # -- topology ----------------------------------------------------------------------------

    def _view(self, node: ClusterNode) -> list[NodeInfo]:
        return _parse_nodes(node.info("CLUSTER", "NODES"))

    def topology(self) -> list[NodeInfo]:
        """The cluster's nodes as the first live node sees them."""
        for node in self.live():
            with contextlib.suppress(redis.RedisError, OSError):
                return self._view(node)
        raise RuntimeError("no node of the cluster answers")

    def _by_port(self, port: int) -> ClusterNode:
        for node in self.nodes:
            if node.port == port:
                return node
        raise KeyError(port)

    def primaries(self) -> list[ClusterNode]:
        """The live nodes serving slots now (as primaries)."""
        return [
            self._by_port(info.port)
            for info in self.topology()
            if info.primary and info.slots and not info.failed
        ]

    def replicas_of(self, primary: ClusterNode) -> list[ClusterNode]:
        """The nodes replicating ``primary`` now."""
        view = self.topology()
        ids = {info.port: info.node_id for info in view}
        return [
            self._by_port(info.port)
            for info in view
            if info.primary_id is not None and info.primary_id == ids.get(primary.port)
        ]

    def primary_for(self, key: str | bytes) -> ClusterNode:
        """The node serving ``key``'s slot now."""
        return self.primary_for_slot(slot_of(key))

    def node_id(self, node: ClusterNode) -> str:
        """The cluster node id of ``node`` (``CLUSTER MYID``)."""
        return node.info("CLUSTER", "MYID")

    # -- resharding --------------------------------------------------------------------------

    def move_slot(
        self,
        slot: int,
        target: ClusterNode,
        batch: int = 100,
        between: Callable[[], None] | None = None,
        timeout: float = 120.0,
    ) -> None:
        """Move one slot, with its keys, to the primary ``target`` (what ``redis-cli --cluster
        reshard`` does per slot: ``SETSLOT IMPORTING``/``MIGRATING``, ``MIGRATE`` in batches,
        ``SETSLOT NODE`` on every primary). ``between`` is called after each batch while the
        slot is half moved (clients then get ``ASK`` redirections); then waits for the cluster
        to be ok.

        Raises
        ------
        ValueError
            ``target`` is not a primary, or already serves the slot.
        """
        source = self.primary_for_slot(slot)
        if target.port == source.port:
            raise ValueError(f"{target.address} already serves slot {slot}")
        if target.port not in {p.port for p in self.primaries()}:
            raise ValueError(f"{target.address} is not a primary: move slots to a primary")
        source_id, target_id = self.node_id(source), self.node_id(target)
        to, src = target.connect(), source.connect()
        try:
            to.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
            src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
            while keys := src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, batch):
                src.execute_command("MIGRATE", _HOST, target.port, "", 0, 30_000, "KEYS", *keys)
                if between is not None:
                    between()
            for node in (target, source, *self.primaries()):
                client = node.connect()
                try:
                    client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
                finally:
                    client.close()
        finally:
            to.close()
            src.close()
        self._wait(
            lambda: self._healthy() and self.primary_for_slot(slot).port == target.port,
            timeout,
            f"slot {slot} to be served by {target.address} everywhere",
        )

    def primary_for_slot(self, slot: int) -> ClusterNode:
        """The node serving ``slot`` now."""
        for info in self.topology():
            if info.primary and not info.failed and any(lo <= slot <= hi for lo, hi in info.slots):
                return self._by_port(info.port)
        raise LookupError(f"no live primary serves slot {slot} (is the cluster ok?)")

    # -- waiting -----------------------------------------------------------------------------

    def _healthy(self) -> bool:
        """Every live node: ``cluster_state:ok``, every slot served by a live primary in its
        own view, every replica's link to its primary up."""
        live = self.live()
        ports = {node.port for node in live}
        try:
            for node in live:
                if "cluster_state:ok" not in node.info("CLUSTER", "INFO"):
                    return False
                view = self._view(node)
                serving = [i for i in view if i.primary and i.slots]
                if any(i.failed or i.port not in ports for i in serving):
                    return False
                if sum(hi - lo + 1 for i in serving for lo, hi in i.slots) != 16384:
                    return False
                me = next(i for i in view if i.port == node.port)
                if not me.primary and node.replication().get("master_link_status") != "up":
                    return False
        except (redis.RedisError, OSError, StopIteration):
            return False
        return True

    def wait_ok(self, timeout: float = 120.0) -> None:
        """Wait until the cluster is healthy (see above) on every live node.

        Raises
        ------
        TimeoutError
            Not healthy within ``timeout`` seconds; the message holds the nodes' views.
        """
        self._wait(self._healthy, timeout, "the cluster to be ok on every node")

    def kill(self, node: ClusterNode) -> int:
        """Kill ``node`` (SIGKILL by its PID: a crash); return the PID."""
        pid = node.pid
        node.kill()
        return pid

    def restart(self, node: ClusterNode, timeout: float = 120.0) -> None:
        """Start a killed ``node`` again (on new ports, with its ``nodes.conf``): it rejoins,
        as a replica of whichever node took over its slots; waits until the cluster is ok."""
        if node.running():
            raise ValueError(f"{node.address} is running: kill it first")
        self._start_node(node, time.monotonic() + timeout)
        self.wait_ok(timeout)

    def wait_replicated(self, timeout: float = 120.0) -> None:
        """Wait until every replica has acknowledged everything its primary had written when
        this was called (replication is asynchronous: a write acknowledged by a primary that
        dies before this may be lost in the failover)."""

        def replicas(info: dict[str, Any]) -> list[dict[str, Any]]:
            return [v for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)]

        targets: list[tuple[ClusterNode, int, int]] = []  # primary, offset, replicas then
        for primary in self.primaries():
            info = primary.replication()
            targets.append((primary, int(info.get("master_repl_offset", 0)), len(replicas(info))))

        def caught_up() -> bool:
            for primary, offset, count in targets:
                acked = [r for r in replicas(primary.replication()) if int(r["offset"]) >= offset]
                if len(acked) < count:
                    return False
            return True

        self._wait(caught_up, timeout, "the replicas to catch up with their primaries")

    def wait_failover(self, timeout: float = 120.0) -> list[ClusterNode]:
        """After a primary was killed: wait until its replica serves its slots and the cluster
        is ok again; return the primaries then."""
        self.wait_ok(timeout)
        return self.primaries()

    def _wait(self, ready: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"waited {timeout:.0f} s for {what}; views:\n{self._describe(self.live())}"
                )
            time.sleep(0.1)

    def _describe(self, nodes: Iterable[ClusterNode]) -> str:
        lines = []
        for node in nodes:
            try:
                state = node.info("CLUSTER", "INFO").splitlines()[0]
                lines.append(f"{node.address}: {state}\n{node.info('CLUSTER', 'NODES')}")
            except (redis.RedisError, OSError) as exc:
                lines.append(f"{node.address}: {exc} (log {node.log_path})")
        return "\n".join(lines)
