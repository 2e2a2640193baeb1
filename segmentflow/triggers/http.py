"""Bearer-token check shared by the dispatcher's and the dashboard's HTTP endpoints."""

from __future__ import annotations

import hmac


def authorized(header: str | None, token: str | None) -> bool:
    """Whether an ``Authorization`` header carries the bearer ``token`` (always when unset).

    Examples
    --------
    >>> authorized(None, None), authorized("Bearer s3", "s3"), authorized("Bearer x", "s3")
    (True, True, False)
    """
    if not token:
        return True
    if not header or not header.startswith("Bearer "):
        return False
    return hmac.compare_digest(header[len("Bearer ") :].encode(), token.encode())
