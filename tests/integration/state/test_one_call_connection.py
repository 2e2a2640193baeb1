"""segmentflow/state/client.py ``connect``: a ``redis://`` client packs with
``OneCallConnection``, and what it writes reads back exactly as a stock redis-py client wrote it
(plain commands, a ``MULTI`` pipeline, a script, every argument type)."""

from __future__ import annotations

import pytest
import redis

from segmentflow.state.client import OneCallConnection, OneCallPacker, connect

pytestmark = pytest.mark.integration


def test_connect_uses_one_call_connection(redis_url: str) -> None:
    client = connect(redis_url)
    try:
        assert client.connection_pool.connection_class is OneCallConnection
        assert client.ping()
        connection = client.connection_pool.get_connection()
        try:
            assert isinstance(connection._command_packer, OneCallPacker)
        finally:
            client.connection_pool.release(connection)
    finally:
        client.close()


def test_writes_read_back_like_a_stock_client(redis_url: str, namespace: str) -> None:
    ours, stock = connect(redis_url), redis.Redis.from_url(redis_url)
    values: list[str | bytes | int | float] = [
        "caf\u00e9",
        b"\x00\xffraw",
        -(2**70),
        0.1,
        1e-300,
        12,
    ]
    try:
        for who, client in (("ours", ours), ("stock", stock)):
            pipe = client.pipeline(transaction=True)
            pipe.hset(f"{namespace}:{who}:h", mapping={f"f{i}": v for i, v in enumerate(values)})
            pipe.zadd(f"{namespace}:{who}:z", {"a": 0.1, "b": 2.5e10, "c": -3})
            pipe.rpush(f"{namespace}:{who}:l", *values)
            pipe.execute()
            client.eval(  # type: ignore[no-untyped-call]
                "return redis.call('SET', KEYS[1], ARGV[1] .. ARGV[2])",
                1,
                f"{namespace}:{who}:s",
                "x",
                1.5,
            )
        for suffix in ("h", "z", "l", "s"):
            key = f"{namespace}:{{}}:{suffix}"
            assert stock.dump(key.format("ours")) == stock.dump(key.format("stock")), suffix
        with pytest.raises(redis.DataError):
            ours.set(f"{namespace}:bad", True)  # type: ignore[arg-type]
    finally:
        ours.close()
        stock.close()
