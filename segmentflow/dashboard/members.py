"""The dashboard's member lists (issue 15): each segment of the populations table links here.

* ``GET /members/{dimension}/{value}``: the whole audience as a CSV download
  (``customer_id,since``), streamed through the worker's members endpoint page by page;
* ``GET /api/members/{dimension}/{value}?limit=N&cursor=C``: one page, as the worker answers it.

Both call the worker with the dashboard's token, behind the dashboard's own token check.
"""

from __future__ import annotations

import csv
import io
import logging
import urllib.parse
from typing import Any

import aiohttp
import orjson
from aiohttp import web

log = logging.getLogger("segmentflow.dashboard")
#: members per request to the worker while streaming a download
PAGE = 5000


def members_url(worker_url: str, dimension: str, value: str, query: dict[str, str]) -> str:
    """The worker's members URL of a segment (path parts escaped).

    Examples
    --------
    >>> members_url("http://w:6066", "rule:vip", "in", {"limit": "5"})
    'http://w:6066/segments/rule%3Avip/in/members?limit=5'
    """
    dim, val = (urllib.parse.quote(part, safe="") for part in (dimension, value))
    suffix = f"?{urllib.parse.urlencode(query)}" if query else ""
    return f"{worker_url}/segments/{dim}/{val}/members{suffix}"


def add_routes(app: web.Application, worker_url: str, api_token: str | None) -> None:
    """Serve the member lists of ``worker_url``'s segments on ``app``."""
    headers = {"Authorization": f"Bearer {api_token}"} if api_token else {}
    timeout = aiohttp.ClientTimeout(total=60)

    async def fetch(session: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
        async with session.get(url, headers=headers, timeout=timeout) as response:
            return response.status, orjson.loads(await response.read())

    async def page(request: web.Request) -> web.StreamResponse:
        dim, value = request.match_info["dimension"], request.match_info["value"]
        query = {k: v for k, v in request.query.items() if k in ("limit", "cursor")}
        try:
            async with aiohttp.ClientSession() as session:
                status, body = await fetch(session, members_url(worker_url, dim, value, query))
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            return web.json_response({"error": f"worker {worker_url}: {exc}"}, status=502)
        return web.json_response(body, status=status)

    async def download(request: web.Request) -> web.StreamResponse:
        dim, value = request.match_info["dimension"], request.match_info["value"]
        name = f"{dim}-{value}".replace(":", "_").replace("/", "_").replace('"', "")
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/csv; charset=utf-8",
                "Content-Disposition": f'attachment; filename="{name}.csv"',
            }
        )
        cursor: str | None = None
        async with aiohttp.ClientSession() as session:
            while True:
                query = {"limit": str(PAGE)} | ({"cursor": cursor} if cursor else {})
                try:
                    status, body = await fetch(session, members_url(worker_url, dim, value, query))
                except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                    status, body = 502, {"error": f"worker {worker_url}: {exc}"}
                if status != 200:
                    if not response.prepared:
                        return web.json_response(body, status=status)
                    # headers are sent: end the connection without the last chunk, so the
                    # download shows as failed instead of a silently short list
                    log.error("member download %s/%s cut off: %s", dim, value, body)
                    raise ConnectionResetError(f"worker answered {status} mid-download")
                if not response.prepared:
                    await response.prepare(request)
                    await response.write(b"customer_id,since\n")
                await response.write(_csv(body["members"]))
                cursor = body["next_cursor"]
                if cursor is None:
                    break
        await response.write_eof()
        return response

    app.router.add_get("/api/members/{dimension}/{value}", page)
    app.router.add_get("/members/{dimension}/{value}", download)


def _csv(members: list[dict[str, str]]) -> bytes:
    """CSV rows of a page of members.

    Examples
    --------
    >>> _csv([{"customer_id": "a,b", "since": "2026-01-01T00:00:00Z"}])
    b'"a,b",2026-01-01T00:00:00Z\\n'
    """
    buffer = io.StringIO()
    rows = csv.writer(buffer, lineterminator="\n")
    for member in members:
        rows.writerow((member["customer_id"], member["since"]))
    return buffer.getvalue().encode()
