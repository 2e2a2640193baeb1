"""segmentflow/state/client.py: a ``redis+cluster://`` / ``rediss+cluster://`` URL's seeds, auth
and query options (TLS) reach every node's connection pool of the ``RedisCluster`` that
``connect`` builds (no server: the cluster's slot discovery is stubbed out)."""

from __future__ import annotations

import ssl
from typing import Any

import pytest
import redis
from redis._parsers import CommandsParser
from redis.cluster import NodesManager, RedisCluster
from redis.connection import Connection, SSLConnection

from segmentflow.state.client import connect, is_cluster, seeds

TLS_URL = (
    "rediss+cluster://app:s3cret@10.0.0.1:7000,10.0.0.2:7001,10.0.0.3/"
    "?ssl_cert_reqs=none&ssl_ca_certs=/etc/ca.pem&socket_connect_timeout=3"
)


@pytest.fixture
def no_discovery(monkeypatch: pytest.MonkeyPatch) -> None:
    """``RedisCluster`` asks a seed for the slot map and the command table when built: not
    here."""
    monkeypatch.setattr(NodesManager, "initialize", lambda self, *a, **kw: None)
    monkeypatch.setattr(CommandsParser, "initialize", lambda self, *a, **kw: None)


def test_seeds_keep_scheme_auth_and_query() -> None:
    found = seeds(TLS_URL)
    assert found is not None
    first, nodes = found
    assert first == (
        "rediss://app:s3cret@10.0.0.1:7000/"
        "?ssl_cert_reqs=none&ssl_ca_certs=/etc/ca.pem&socket_connect_timeout=3"
    )
    assert nodes == [("10.0.0.1", 7000), ("10.0.0.2", 7001), ("10.0.0.3", 6379)]
    assert seeds("redis+cluster://h1:7000/") == ("redis://h1:7000/", [("h1", 7000)])
    assert seeds("rediss://h1:6380/0") is None and seeds("unix:///tmp/redis.sock") is None


def _node_pool(client: RedisCluster[bytes], host: str, port: int) -> Any:
    manager = client.nodes_manager
    node = manager.create_redis_node(host, port, **manager.connection_kwargs)
    return node.connection_pool


@pytest.mark.usefixtures("no_discovery")
def test_tls_and_auth_reach_every_node_of_the_cluster() -> None:
    client = connect(TLS_URL, socket_timeout=30)
    assert is_cluster(client) and isinstance(client, RedisCluster)
    assert {(n.host, n.port) for n in client.startup_nodes} >= {
        ("10.0.0.1", 7000),
        ("10.0.0.2", 7001),
        ("10.0.0.3", 6379),
    }
    for host, port in (("10.0.0.2", 7001), ("10.0.0.9", 7005)):  # a seed, a discovered node
        pool = _node_pool(client, host, port)
        assert issubclass(pool.connection_class, SSLConnection)
        kwargs = pool.connection_kwargs
        assert (kwargs["host"], kwargs["port"]) == (host, port)
        assert kwargs["username"] == "app" and kwargs["password"] == "s3cret"
        assert kwargs["ssl_cert_reqs"] == "none"
        assert kwargs["ssl_ca_certs"] == "/etc/ca.pem"
        assert kwargs["socket_connect_timeout"] == 3.0
        assert kwargs["socket_timeout"] == 30  # connect()'s own options too
        connection = pool.make_connection()
        assert isinstance(connection, SSLConnection)
        assert connection.cert_reqs == ssl.CERT_NONE
        assert connection.ca_certs == "/etc/ca.pem"


@pytest.mark.usefixtures("no_discovery")
def test_plain_cluster_url_is_not_tls_and_password_only_auth_works() -> None:
    client = connect("redis+cluster://:pw@127.0.0.1:7000,127.0.0.1:7001/")
    assert isinstance(client, RedisCluster)
    pool = _node_pool(client, "127.0.0.1", 7001)
    assert pool.connection_class is Connection
    assert pool.connection_kwargs["password"] == "pw"
    assert pool.connection_kwargs.get("username") in (None, "")


def test_a_cluster_url_cannot_select_a_database() -> None:
    """A cluster has only database 0: the URL's ``/3`` is refused with redis-py's reason."""
    with pytest.raises(redis.exceptions.RedisClusterException, match="db"):
        connect("redis+cluster://127.0.0.1:7000/3")


def test_other_urls_give_one_redis_with_their_options() -> None:
    client = connect("rediss://:pw@10.0.0.1:6380/2?ssl_cert_reqs=none", socket_timeout=30)
    assert not is_cluster(client) and isinstance(client, redis.Redis)
    kwargs = client.connection_pool.connection_kwargs
    assert issubclass(client.connection_pool.connection_class, SSLConnection)
    assert (kwargs["db"], kwargs["password"], kwargs["ssl_cert_reqs"]) == (2, "pw", "none")
    assert kwargs["socket_timeout"] == 30
