"""Segment calls -> CONTRACT §2 events (pure functions, no I/O).

Identity: which customer an event belongs to
--------------------------------------------
``customer_id`` is the call's ``userId`` when it is set (a non-empty string, or an integer,
which is turned into its decimal string), else its ``anonymousId``. A Segment source knows a
visitor only by ``anonymousId`` until they log in or sign up; from then on the SDKs send
``userId`` on every call. ``userId`` is the stable, cross-device identity that CRM and
marketing-automation tools key on, so it is the right key for segments that drive them.

A call carrying both ids is keyed on ``userId`` and its ``anonymousId`` becomes the event's
``anonymous_id`` (CONTRACT §2, §9): the worker then merges the anonymous profile into the
identified one. ``alias`` becomes the contract's ``alias`` event (``previousId`` ->
``previous_id``; without ``previousId`` the call's ``anonymousId``).

Calls
-----
- ``track`` -> the type its event name maps to (below); ``identify`` -> ``identify``.
- ``page`` and ``screen`` -> ``page_view``. The url is ``properties.url``, else
  ``context.page.url``, else ``path`` (``properties.path`` or ``context.page.path``, plus
  ``search``), else ``page:<category>/<name>`` (``screen:<name>`` for a screen) from the call's
  name, so a page view is never refused for a field the SDKs may omit.
- ``group`` -> an ``identify`` of the user whose traits are ``group_id`` and each group trait
  as ``group_<name>`` (nested traits flattened with dots).
- ``alias`` -> ``alias`` {previous_id}.

Other fields
------------
- ``messageId`` -> ``event_id`` (an integer is stringified). Without one, the id is a UUID v5 of
  the call's canonical JSON, so a client retrying the same call produces the same id and the
  worker applies it once.
- ``timestamp`` (else ``originalTimestamp``, all RudderStack sends) -> ``timestamp``, normalised
  to RFC 3339 UTC with ``Z``; without either, the time the collector received the request. A
  timestamp that is not RFC 3339 with an offset is not guessed at: the call is dead-lettered
  with the worker's reason code (e.g. ``naive_timestamp``).
- Track names follow :data:`STANDARD_TRACKS` (Segment's e-commerce v2 and email specs); names
  are matched ignoring case and ``_``/``-``/space differences, and a contract type name
  (``add_to_cart``) is accepted as a track name too. A configurable map (:class:`TrackMap`) adds
  names, or marks them ``ignore`` (accepted, not forwarded). Any other name is dead-lettered as
  ``unmapped_track``.
- Every built event is checked with :func:`segmentflow.schemas.decode.validate_event`, exactly as
  the worker will check it; an event that would fail there is dead-lettered here instead, with
  the same reason code (``missing_field``, ``invalid_money``, ...).
- Bounded input (CONTRACT §2): money over ``max_money`` and a timestamp outside the years
  1970..2100 or more than ``max_future_skew`` after the collector's clock are not dead-lettered
  but refused (:class:`Refused`: the request gets 400 naming the field), as the sender can fix it.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final

from segmentflow.config import ConfigError
from segmentflow.schemas.decode import DEFAULT_LIMITS, Limits, Rejection, validate_event
from segmentflow.schemas.events import EVENT_TYPES
from segmentflow.schemas.reasons import Reason
from segmentflow.schemas.timefmt import TimestampError, format_us, from_datetime, parse_rfc3339

#: Segment track event name -> contract event type (CONTRACT §9).
STANDARD_TRACKS: Final[dict[str, str]] = {
    "Product Viewed": "product_view",
    "Product Added": "add_to_cart",
    "Product Removed": "remove_from_cart",
    "Checkout Started": "checkout_started",
    "Products Searched": "search",
    "Order Completed": "order_completed",
    "Order Refunded": "order_refunded",
    "Email Sent": "email_sent",
    "Email Delivered": "email_delivered",
    "Email Opened": "email_opened",
    "Email Link Clicked": "email_clicked",
    "Email Bounced": "email_bounced",
    "Unsubscribed": "email_unsubscribed",
    "Email Marked as Spam": "email_complained",
}

#: Map target that accepts a track name without forwarding it.
IGNORE: Final = "ignore"

#: Segment call types (all mapped, see the module docstring).
SEGMENT_CALLS: Final = frozenset({"track", "identify", "page", "screen", "group", "alias"})
MAPPED_CALLS: Final = SEGMENT_CALLS

#: Dead-letter reason codes added by the collector (the rest are the worker's, see
#: :mod:`segmentflow.schemas.reasons`).
UNMAPPED_TRACK: Final = "unmapped_track"
UNSUPPORTED_CALL: Final = "unsupported_call"

_NAMESPACE = uuid.UUID("6f1d4f4e-2b8c-5b7a-9a43-5e67c0f1c011")
_SEPARATORS = re.compile(r"[\s_\-]+")
_DIGITS = re.compile(r"\d+")
_VOLATILE = frozenset({"sentAt", "writeKey", "receivedAt"})
#: Default bounds of CONTRACT §2 (config ``max_money``, ``max_future_skew``).
DEFAULT_MAX_MONEY: Final = 1e9
DEFAULT_MAX_FUTURE_SKEW_US: Final = 24 * 3600 * 1_000_000


@dataclass(frozen=True, slots=True)
class Bounds:
    """Bounded input (CONTRACT §2): largest money amount, and how far after the collector's
    clock a timestamp may be (microseconds)."""

    max_money: float = DEFAULT_MAX_MONEY
    max_future_skew_us: int = DEFAULT_MAX_FUTURE_SKEW_US


DEFAULT_BOUNDS = Bounds()


def normalize_name(name: str) -> str:
    """The lookup form of a track name: lower case, runs of space/``_``/``-`` as one space.

    >>> normalize_name("  Order_Completed ")
    'order completed'
    """
    return _SEPARATORS.sub(" ", name.strip().lower())


class TrackMapError(ConfigError):
    """A custom track map entry is invalid (the message names it)."""


class TrackMap:
    """Resolves a track event name to a contract event type, :data:`IGNORE` or ``None``.

    Parameters
    ----------
    custom
        Extra ``{"Track Name": target}`` entries; a target is a contract event type
        (``"add_to_cart"``), a standard Segment name (``"Product Added"``) or ``"ignore"``.
        Custom entries win over the standard names.
    """

    def __init__(self, custom: Mapping[str, str] | None = None) -> None:
        table: dict[str, str] = {normalize_name(t): t for t in EVENT_TYPES}
        table.update({normalize_name(k): v for k, v in STANDARD_TRACKS.items()})
        standard = dict(table)
        for name, target in (custom or {}).items():
            if not isinstance(name, str) or not name.strip():
                raise TrackMapError(f"track map: key {name!r} must be a non-empty string")
            if not isinstance(target, str):
                raise TrackMapError(f"track map: {name!r} -> {target!r} is not a string")
            resolved = target if target in EVENT_TYPES or target == IGNORE else None
            resolved = resolved or standard.get(normalize_name(target))
            if resolved is None:
                raise TrackMapError(
                    f"track map: {name!r} -> {target!r} is not an event type "
                    f"({', '.join(EVENT_TYPES)}), a standard Segment event name or 'ignore'"
                )
            table[normalize_name(name)] = resolved
        self._table = table

    def resolve(self, name: str) -> str | None:
        """The contract event type (or ``"ignore"``) for a track name, ``None`` if unmapped."""
        return self._table.get(normalize_name(name))


@dataclass(frozen=True, slots=True)
class Built:
    """A valid contract event ready to produce: ``value`` goes to the ``kind`` topic."""

    kind: str
    key: str
    event: dict[str, Any]
    value: bytes


@dataclass(frozen=True, slots=True)
class Failed:
    """A call that becomes a dead letter: reason code, detail, and the key if one is known."""

    reason: str
    detail: str
    key: str | None = None


@dataclass(frozen=True, slots=True)
class Ignored:
    """A call accepted but not forwarded (its track name maps to ``ignore``)."""


@dataclass(frozen=True, slots=True)
class Refused:
    """A call out of the contract's bounds: the whole request is answered 400 naming ``field``
    (a property of the built event, e.g. ``properties.revenue`` or ``timestamp``)."""

    field: str
    detail: str


Outcome = Built | Failed | Ignored | Refused


# -- field helpers ------------------------------------------------------------------------


def _id(value: Any) -> Any:
    """Ids as strings: integers (not booleans) become their decimal string."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return value


def _present(value: Any) -> bool:
    return value is not None and value != ""


def customer_id_of(message: Mapping[str, Any]) -> str | None:
    """``userId`` if set, else ``anonymousId`` (see the module docstring); ``None`` if neither."""
    for field in ("userId", "anonymousId"):
        value = _id(message.get(field))
        if isinstance(value, str) and value:
            return value
    return None


def canonical_json(message: Mapping[str, Any]) -> bytes:
    """Deterministic JSON bytes of a call (sorted keys, no spaces, ASCII-escaped)."""
    return json.dumps(message, sort_keys=True, separators=(",", ":"), default=str).encode()


def event_id_of(message: Mapping[str, Any]) -> Any:
    """``messageId``, else a UUID v5 of the call's canonical JSON without the fields a retry
    changes (``sentAt``, ``writeKey``, ``receivedAt``), so retries keep the same id."""
    value = _id(message.get("messageId"))
    if _present(value):
        return value
    stable = {k: v for k, v in message.items() if k not in _VOLATILE}
    return str(uuid.uuid5(_NAMESPACE, canonical_json(stable).decode()))


def format_received(moment: datetime) -> str:
    """An aware datetime as RFC 3339 UTC with ``Z``."""
    text: str = format_us(from_datetime(moment.astimezone(UTC)))
    return text


def timestamp_of(message: Mapping[str, Any], received_at: datetime) -> Any:
    """``timestamp`` (else ``originalTimestamp``) normalised to RFC 3339 UTC ``Z`` (left as is
    when unparseable, so the validator names the problem), else the time received."""
    value = message.get("timestamp")
    if not _present(value):
        value = message.get("originalTimestamp")
    if not _present(value):
        return format_received(received_at)
    if not isinstance(value, str):
        return value
    try:
        return format_us(parse_rfc3339(value.strip()))
    except TimestampError:
        return value


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _first(source: Mapping[str, Any], *names: str) -> Any:
    for name in names:
        value = source.get(name)
        if _present(value):
            return value
    return None


def _quantity(value: Any, default: int | None = 1) -> Any:
    """Quantities as integers: absent -> ``default``; ``2.0`` and ``"2"`` -> ``2``."""
    if not _present(value):
        return default
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and _DIGITS.fullmatch(value.strip()):
        return int(value.strip())
    return value


def _compact(props: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in props.items() if v is not None}


def _flatten_traits(traits: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested objects flattened with dotted names; lists kept as a JSON string."""
    out: dict[str, Any] = {}
    for name, value in traits.items():
        key = f"{prefix}{name}"
        if isinstance(value, dict):
            out.update(_flatten_traits(value, key + "."))
        elif isinstance(value, list | tuple):
            out[key] = json.dumps(value, separators=(",", ":"), default=str)
        else:
            out[key] = value
    return out


def group_traits_of(message: Mapping[str, Any]) -> dict[str, Any]:
    """The user traits a ``group`` call sets: ``group_id`` and ``group_<name>`` per group trait."""
    traits = {f"group_{k}": v for k, v in _flatten_traits(_dict(message.get("traits"))).items()}
    group_id = _id(message.get("groupId"))
    if _present(group_id):
        traits["group_id"] = group_id
    return traits


def _text(*values: Any) -> str | None:
    """The first non-empty string among ``values``."""
    for value in values:
        if isinstance(value, str) and value:
            return value
    return None


def page_url_of(message: Mapping[str, Any], call: str = "page") -> str:
    """The url of a page (or screen) view; see the module docstring for the fallbacks."""
    props = _dict(message.get("properties"))
    page = _dict(_dict(message.get("context")).get("page"))
    url = _text(props.get("url"), page.get("url"))
    if url is not None:
        return url
    path = _text(props.get("path"), page.get("path"))
    if path is not None:
        return path + (_text(props.get("search"), page.get("search")) or "")
    name = _text(message.get("name"), props.get("name")) or ""
    category = _text(message.get("category"), props.get("category"))
    if call == "screen":
        return f"screen:{name}"
    return f"page:{category}/{name}" if category else f"page:{name}"


def traits_of(message: Mapping[str, Any]) -> dict[str, Any]:
    """Identify traits (``traits``, else ``context.traits``; ``properties`` for a track call
    mapped to ``identify``), flattened, with Segment's reserved traits given the contract's
    names: ``address.city`` -> ``city``, ``address.country`` -> ``country``, ``createdAt`` ->
    ``signup_at`` (an existing trait of that name wins)."""
    source = message.get("traits")
    if not isinstance(source, dict):
        source = _dict(message.get("context")).get("traits")
    if not isinstance(source, dict):
        source = message.get("properties")
    traits = _flatten_traits(_dict(source))
    for alias, name in (("address.city", "city"), ("address.country", "country")):
        if alias in traits and name not in traits:
            traits[name] = traits[alias]
    for alias in ("createdAt", "created_at"):
        if alias in traits and "signup_at" not in traits:
            traits["signup_at"] = traits[alias]
    return traits


def _item(product: Any) -> Any:
    if not isinstance(product, dict):
        return product
    return _compact(
        {
            "product_id": _id(_first(product, "product_id", "sku", "id")),
            "category": product.get("category"),
            "quantity": _quantity(product.get("quantity")),
            "price": product.get("price"),
        }
    )


def build_properties(
    event_type: str, message: Mapping[str, Any], call: str = "track"
) -> dict[str, Any]:
    """The contract ``properties`` of ``event_type`` from a Segment ``call`` (CONTRACT §2, §9)."""
    props = _dict(message.get("properties"))
    page = _dict(_dict(message.get("context")).get("page"))
    out: dict[str, Any]
    if event_type == "page_view":
        out = {
            "url": page_url_of(message, call),
            "referrer": _text(props.get("referrer"), page.get("referrer")),
        }
    elif event_type == "identify" and call == "group":
        out = {"traits": group_traits_of(message)}
    elif event_type == "identify":
        out = {"traits": traits_of(message)}
    elif event_type == "alias":
        out = {"previous_id": _id(_first(message, "previousId", "anonymousId"))}
    elif event_type in ("product_view", "add_to_cart", "remove_from_cart"):
        out = {"product_id": _id(_first(props, "product_id", "sku", "id"))}
        if event_type == "product_view":
            out |= {"category": props.get("category"), "price": props.get("price")}
        elif event_type == "add_to_cart":
            out |= {"quantity": _quantity(props.get("quantity")), "price": props.get("price")}
    elif event_type == "checkout_started":
        out = {"cart_value": _first(props, "value", "revenue", "total")}
    elif event_type == "search":
        out = {"query": props.get("query")}
    elif event_type == "order_completed":
        products = props.get("products")
        out = {
            "order_id": _id(_first(props, "order_id", "orderId")),
            "revenue": _first(props, "revenue", "total", "value"),
            "currency": _first(props, "currency") or "USD",
        }
        if isinstance(products, list):
            out["items"] = [_item(p) for p in products]
        elif products is not None:
            out["items"] = products
    elif event_type == "order_refunded":
        out = {
            "order_id": _id(_first(props, "order_id", "orderId")),
            "amount": _first(props, "amount", "total", "revenue", "value"),
        }
    else:  # email events
        out = {"campaign_id": _id(_first(props, "campaign_id", "campaign_name", "email_id"))}
        if event_type == "email_clicked":
            out["url"] = _first(props, "link_url", "url")
        elif event_type == "email_bounced":
            out["bounce_type"] = props.get("bounce_type")
    return _compact(out)


_CALL_TYPES: Final = {
    "page": "page_view",
    "screen": "page_view",
    "identify": "identify",
    "group": "identify",
    "alias": "alias",
}


def _event_type(call: str, message: Mapping[str, Any], tracks: TrackMap) -> str | Failed:
    if call in _CALL_TYPES:
        return _CALL_TYPES[call]
    if call != "track":
        return Failed(UNSUPPORTED_CALL, f"Segment {call!r} calls are not mapped to events")
    name = message.get("event")
    if not isinstance(name, str) or not name.strip():
        return Failed("missing_field", "track call without an event name")
    target = tracks.resolve(name)
    if target is None:
        return Failed(
            UNMAPPED_TRACK,
            f"track event {name[:100]!r} has no mapping (add it to "
            "SEGMENTFLOW_COLLECTOR_TRACK_MAP to forward it)",
        )
    return target


#: Money fields of the built events' properties (and of each item).
_MONEY: Final = ("revenue", "amount", "price", "cart_value")


_DECIMAL = re.compile(r"(?:[0-9]+(?:\.[0-9]+)?|\.[0-9]+)", re.ASCII)


def _over(value: Any, limit: float) -> bool:
    """Money (a number or decimal string, CONTRACT §2) above ``limit``; anything that is not
    money is left to the validator (a dead letter with its reason)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return value > limit  # a huge int compares exactly; NaN is not over (the validator says)
    if isinstance(value, str) and _DECIMAL.fullmatch(value):
        return Decimal(value) > Decimal(repr(float(limit)))
    return False


def out_of_bounds(event: Mapping[str, Any], now_us: int, bounds: Bounds) -> Refused | None:
    """Why ``event`` is outside CONTRACT §2's bounds (money, timestamp), else ``None``."""
    stamp = event.get("timestamp")
    if isinstance(stamp, str):
        try:
            ts = parse_rfc3339(stamp)
        except TimestampError as exc:
            if exc.code == "timestamp_out_of_range":
                return Refused("timestamp", f"timestamp {stamp[:64]!r} is outside 1970..2100")
        else:
            if ts - now_us > bounds.max_future_skew_us:
                return Refused(
                    "timestamp",
                    f"timestamp {stamp[:64]!r} is more than max_future_skew "
                    f"({bounds.max_future_skew_us / 3_600_000_000:g}h) after the collector's clock",
                )
    props = _dict(event.get("properties"))
    items = props.get("items")
    where: list[tuple[str, Mapping[str, Any]]] = [("properties", props)]
    if isinstance(items, list):
        where += [(f"properties.items[{i}]", p) for i, p in enumerate(items) if isinstance(p, dict)]
    for prefix, source in where:
        for name in _MONEY:
            value = source.get(name)
            if value is not None and _over(value, bounds.max_money):
                return Refused(
                    f"{prefix}.{name}",
                    f"{prefix}.{name} = {str(value)[:40]} is over max_money ({bounds.max_money:g})",
                )
    return None


def map_call(
    call: str,
    message: Mapping[str, Any],
    received_at: datetime,
    tracks: TrackMap,
    limits: Limits = DEFAULT_LIMITS,
    bounds: Bounds = DEFAULT_BOUNDS,
) -> Outcome:
    """Map one Segment call (``call`` = its type) to a validated contract event.

    Returns
    -------
    Built | Failed | Ignored | Refused
        The event and its topic kind, or why it is dead-lettered, or that it is ignored, or
        why the request must be refused (out of bounds).
    """
    customer = customer_id_of(message)
    target = _event_type(call, message, tracks)
    if isinstance(target, Failed):
        return Failed(target.reason, target.detail, customer)
    if target == IGNORE:
        return Ignored()
    if customer is None:
        return Failed("missing_field", "neither userId nor anonymousId is set")
    event: dict[str, Any] = {
        "event_id": event_id_of(message),
        "customer_id": customer,
        "type": target,
        "timestamp": timestamp_of(message, received_at),
        "properties": build_properties(target, message, call),
    }
    anonymous = _id(message.get("anonymousId"))
    if _present(_id(message.get("userId"))) and _present(anonymous):
        event["anonymous_id"] = anonymous
    refused = out_of_bounds(event, from_datetime(received_at.astimezone(UTC)), bounds)
    if refused is not None:
        return refused
    kind = EVENT_TYPES[target][0]
    try:
        checked = validate_event(event, kind, limits)
    except (ValueError, OverflowError, TypeError) as exc:  # e.g. an integer too large for money
        checked = Rejection(Reason.INVALID_FIELD, f"cannot validate: {exc}")
    if isinstance(checked, Rejection):
        return Failed(str(checked.reason), checked.detail, customer)
    try:
        value = json.dumps(
            event, ensure_ascii=False, separators=(",", ":"), allow_nan=False
        ).encode("utf-8")
    except UnicodeEncodeError:
        return Failed("invalid_utf8", "a string holds a lone UTF-16 surrogate", customer)
    except (ValueError, RecursionError) as exc:  # NaN/Infinity have no JSON form
        return Failed("invalid_field", f"cannot encode the event as JSON: {exc}", customer)
    if len(value) > limits.max_event_bytes:
        return Failed(
            "oversized",
            f"event is {len(value)} bytes, over max_event_bytes={limits.max_event_bytes}",
            customer,
        )
    return Built(kind, customer, event, value)
