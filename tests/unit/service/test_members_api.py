"""service/audience.py over the in-memory index: the members endpoint's pages, cursors and
errors (400 with what to do, 503 while Redis is down, never 500) and the export's lines."""

from __future__ import annotations

import csv
import io
import socket

import orjson
import pytest
import redis

from segmentflow.schemas.changes import Change
from segmentflow.schemas.timefmt import format_us
from segmentflow.service import audience
from segmentflow.service.audience import export_lines, members_page, members_response
from segmentflow.state.base import StoreUnavailable
from segmentflow.state.members import Member, MemberIndex, RedisMembers

T0 = 1_767_225_600_000_000


def index_of(n: int) -> MemberIndex:
    index = MemberIndex()
    index.apply(
        [Change(f"c{i:03d}", "rfm", None, "loyal", 1, T0 + (i // 4), None) for i in range(n)]
    )
    return index


@pytest.mark.parametrize(("n", "limit"), [(0, 5), (5, 5), (12, 5), (13, 1), (7, 100)])
def test_pages_cover_the_segment_once_in_order(n: int, limit: int) -> None:
    index = index_of(n)
    seen: list[dict[str, str]] = []
    query: dict[str, str] = {"limit": str(limit)}
    pages = 0
    while True:
        body = members_page(index, "rfm", "loyal", query)
        pages += 1
        assert len(body["members"]) <= limit
        seen.extend(body["members"])
        if body["next_cursor"] is None:
            break
        query = {"limit": str(limit), "cursor": body["next_cursor"]}
    assert [m["customer_id"] for m in seen] == [f"c{i:03d}" for i in range(n)]
    assert seen[:1] == ([{"customer_id": "c000", "since": format_us(T0)}] if n else [])
    assert pages == max(1, -(-n // limit))  # no empty last page when n is a multiple of limit


def test_default_limit() -> None:
    body = members_page(index_of(150), "rfm", "loyal", {})
    assert len(body["members"]) == audience.DEFAULT_LIMIT and body["next_cursor"]


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ({"limit": "0"}, "limit must be an integer from 1 to 10000"),
        ({"limit": "-3"}, "limit must be"),
        ({"limit": "1e3"}, "limit must be"),
        ({"limit": "10001"}, "limit must be"),
        ({"limit": ""}, "limit must be"),
        ({"cursor": "%%%"}, "pass the `next_cursor` of the previous page verbatim"),
        ({"cursor": "eyJhIjoxfQ"}, "next_cursor"),  # valid base64 JSON, not a cursor
        ({"cursor": "WyJ4IiwxXQ"}, "next_cursor"),  # ["x", 1]: fields swapped
    ],
)
def test_bad_parameters_are_400_with_a_message(query: dict[str, str], words: str) -> None:
    status, body = members_response(index_of(3), "rfm", "loyal", query)
    assert status == 400 and words in body["error"]


def test_unknown_segment_is_an_empty_list() -> None:
    assert members_response(index_of(3), "rfm", "nope", {}) == (
        200,
        {"members": [], "next_cursor": None},
    )


class DownReader:
    def page(self, dimension: str, value: str, limit: int, after: Member | None) -> list[Member]:
        raise StoreUnavailable("Connection refused")


def test_redis_down_is_503() -> None:
    status, body = members_response(DownReader(), "rfm", "loyal", {})
    assert (status, body) == (
        503,
        {"error": "the state store cannot be read (Connection refused); retry shortly"},
    )


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def test_the_redis_reader_reports_an_outage_as_store_unavailable() -> None:
    client: redis.Redis[bytes] = redis.Redis(port=closed_port(), socket_connect_timeout=5)
    reader = RedisMembers(client, "ns")
    status, body = members_response(reader, "rfm", "loyal", {})
    assert status == 503 and "retry shortly" in body["error"]
    with pytest.raises(StoreUnavailable):
        reader.count("rfm", "loyal")


def test_export_jsonl_csv_limit_and_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(audience, "EXPORT_PAGE", 4)
    index = index_of(10)
    chunks = list(export_lines(index, "rfm", "loyal", "jsonl"))
    assert len(chunks) == 3  # 4 + 4 + 2 lines
    rows = [orjson.loads(line) for line in "".join(chunks).splitlines()]
    assert [r["customer_id"] for r in rows] == [f"c{i:03d}" for i in range(10)]
    table = list(csv.reader(io.StringIO("".join(export_lines(index, "rfm", "loyal", "csv", 6)))))
    assert table[0] == ["customer_id", "since"] and len(table) == 7
    assert table[1] == ["c000", format_us(T0)]
    assert "".join(export_lines(index, "rfm", "none", "csv")) == "customer_id,since\n"
    assert list(export_lines(index, "rfm", "none", "jsonl")) == []


def test_export_lines_quote_awkward_ids_like_json_and_csv_libraries() -> None:
    ids = ['q"uote', "com,ma", "new\nline", "é\u4e2d", "back\\slash", "plain"]
    index = MemberIndex()
    index.apply([Change(cid, "rfm", None, "loyal", 1, T0 + n, None) for n, cid in enumerate(ids)])
    jsonl = "".join(export_lines(index, "rfm", "loyal", "jsonl"))
    members = index.page("rfm", "loyal", 10, None)
    assert jsonl == "".join(orjson.dumps(audience.member_json(m)).decode() + "\n" for m in members)
    table = list(csv.reader(io.StringIO("".join(export_lines(index, "rfm", "loyal", "csv")))))
    assert [row[0] for row in table[1:]] == sorted(ids, key=str.encode)  # pages: by id
