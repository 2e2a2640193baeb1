"""segmentflow/state/client.py ``OneCallPacker``: the bytes it packs are redis-py's own for
every argument type the adapters send, and what redis-py refuses it refuses the same way."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis import connection
from redis._parsers.encoders import Encoder
from redis.exceptions import DataError

from segmentflow.state.client import OneCallPacker

ENCODE = Encoder("utf-8", "strict", False).encode  # type: ignore[no-untyped-call]
REDIS_PY: Any = connection  # the stubs lack the serializers
STOCK = REDIS_PY.HiredisRespSerializer(REDIS_PY.PythonRespSerializer(6000, ENCODE).pack, ENCODE)
PACKER = OneCallPacker(STOCK.pack)

#: what the adapters pass: names, keys, fields, encoded states, scores, counts
ARGS = st.one_of(
    st.text(),
    st.binary(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=False, allow_infinity=False),
)


def wire(chunks: list[Any]) -> bytes:
    return b"".join(bytes(chunk) for chunk in chunks)


@given(st.sampled_from(["SET", "HSET", b"ZADD", "EVALSHA"]), st.lists(ARGS, max_size=12))
def test_same_bytes_as_redis_py(name: str | bytes, args: list[Any]) -> None:
    assert wire(PACKER.pack(name, *args)) == wire(STOCK.pack(name, *args))


@pytest.mark.parametrize(
    "args",
    [
        ("CLIENT SETNAME", "worker-1"),  # a two-word command name is split, as redis-py does
        (b"CONFIG GET", b"maxmemory"),
        ("CLIENT\tSETNAME", "worker-1"),  # redis-py splits a str name on any whitespace
        ("JSON.SET", "k", "$", "{}"),
        ("SET", "k", memoryview(b"value")),
        ("SET", "k", bytearray(b"value")),
        ("SET", "\u00e9t\u00e9", "\U0001f600"),
    ],
)
def test_special_forms_match(args: tuple[Any, ...]) -> None:
    assert wire(PACKER.pack(*args)) == wire(STOCK.pack(*args))


@pytest.mark.parametrize("bad", [True, None, object(), [1]])
def test_refuses_what_redis_py_refuses(bad: object) -> None:
    with pytest.raises(DataError) as stock:
        STOCK.pack("SET", "k", bad)
    with pytest.raises(DataError) as ours:
        PACKER.pack("SET", "k", bad)
    assert str(ours.value) == str(stock.value)


def test_lone_surrogate_is_refused_like_redis_py() -> None:
    with pytest.raises(UnicodeEncodeError):
        STOCK.pack("SET", "k", "\udc80")
    with pytest.raises(UnicodeEncodeError):
        PACKER.pack("SET", "k", "\udc80")
