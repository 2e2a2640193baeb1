"""The bearer-token check of every HTTP surface (CONTRACT §7): worker, dashboard, triggers.

With ``SEGMENTFLOW_API_TOKEN`` set, every endpoint but ``/health`` requires
``Authorization: Bearer <token>`` (compared in constant time); a missing or wrong token gets
401 with a JSON error. Without a token nothing is checked.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Collection

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

__all__ = [
    "CHALLENGE",
    "OPEN_PATHS",
    "authorized",
    "bearer_middleware",
    "bearer_token",
    "refusal",
    "token_matches",
    "unauthorized",
    "unauthorized_body",
]

#: Paths that never require a token (liveness probes).
OPEN_PATHS: frozenset[str] = frozenset({"/health"})
#: Headers of every 401 (RFC 6750 challenge).
CHALLENGE: dict[str, str] = {"WWW-Authenticate": 'Bearer realm="segmentflow"'}


def bearer_token(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, else None.

    Examples
    --------
    >>> bearer_token("Bearer s3"), bearer_token("Basic eA=="), bearer_token(None)
    ('s3', None, None)
    """
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def token_matches(candidate: str | None, token: str | None) -> bool:
    """Whether ``candidate`` equals ``token`` (constant time; always True when no token)."""
    if not token:
        return True
    if candidate is None:
        return False
    return hmac.compare_digest(candidate.encode(), token.encode())


def authorized(header: str | None, token: str | None) -> bool:
    """Whether an ``Authorization`` header carries the bearer ``token`` (always when unset).

    Examples
    --------
    >>> authorized(None, None), authorized("Bearer s3", "s3"), authorized("Bearer x", "s3")
    (True, True, False)
    >>> authorized(None, "s3"), authorized("s3", "s3")
    (False, False)
    """
    if not token:
        return True
    return token_matches(bearer_token(header), token)


def unauthorized_body(wrong: bool) -> dict[str, str]:
    """The JSON error of a refused request."""
    return {
        "error": "unauthorized",
        "message": ("wrong token" if wrong else "this endpoint needs a token")
        + ": send Authorization: Bearer <SEGMENTFLOW_API_TOKEN>",
    }


def refusal(header: str | None, token: str | None) -> dict[str, str] | None:
    """``None`` when ``header`` carries the token, else the JSON body of the 401 (any framework:
    send it with :data:`CHALLENGE` as headers).

    Examples
    --------
    >>> refusal("Bearer s3", "s3") is None, refusal(None, None) is None
    (True, True)
    >>> refusal("Bearer x", "s3")["message"].startswith("wrong token")
    True
    """
    if authorized(header, token):
        return None
    return unauthorized_body(bearer_token(header) is not None)


def unauthorized(request: web.Request) -> web.Response:
    """401 with a JSON error and a ``WWW-Authenticate`` challenge."""
    wrong = bearer_token(request.headers.get("Authorization")) is not None
    return web.json_response(unauthorized_body(wrong), status=401, headers=CHALLENGE)


def bearer_middleware(
    token: str | None,
    open_paths: Collection[str] = OPEN_PATHS,
    also: Callable[[web.Request], bool] | None = None,
    denied: Callable[[web.Request], web.StreamResponse] | None = None,
) -> Middleware:
    """An aiohttp middleware refusing every request without the bearer ``token``.

    Parameters
    ----------
    token
        The expected token; ``None`` or empty lets everything through.
    open_paths
        Paths served without a token (exact match).
    also
        Another accepted credential (e.g. the dashboard's session cookie).
    denied
        Builds the refusal (default: `unauthorized`, 401 JSON).
    """

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if (
            not token
            or request.path in open_paths
            or authorized(request.headers.get("Authorization"), token)
            or (also is not None and also(request))
        ):
            return await handler(request)
        return (denied or unauthorized)(request)

    return middleware
