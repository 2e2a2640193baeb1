"""Decode raw Kafka messages into validated :class:`Event` objects or :class:`Rejection` s.

The decoder never raises on input: every problem becomes a rejection with a reason code
(:mod:`segmentflow.schemas.reasons`), which the stream layer turns into a dead letter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import ValidationError
from pydantic_core import PydanticCustomError

from segmentflow.schemas.events import (
    CONTROL_TYPES,
    EVENT_TYPES,
    MAX_MONEY,
    Alias,
    Envelope,
    Identify,
    _money,
    _quantity,
)
from segmentflow.schemas.reasons import Reason
from segmentflow.schemas.timefmt import TimestampError, parse_rfc3339


@dataclass(frozen=True, slots=True)
class Event:
    """A validated input event, reduced to what the engine needs.

    ``ts`` is epoch microseconds; ``amount`` is revenue (orders) or refund amount (refunds);
    ``traits`` is set for ``identify``; ``hard_bounce`` for ``email_bounced`` with
    ``bounce_type == "hard"``; ``previous_id`` for ``alias``; ``anonymous_id`` when the event
    carries one (CONTRACT §2: the person's id before being identified).
    """

    event_id: str
    customer_id: str
    type: str
    ts: int
    amount: float = 0.0
    traits: dict[str, Any] | None = None
    hard_bounce: bool = False
    previous_id: str | None = None
    anonymous_id: str | None = None
    #: product categories named by a ``product_view`` / ``add_to_cart`` (``category``) or by
    #: an order's items, in order (read by the ``interest`` dimension)
    categories: tuple[str, ...] = ()


def _categories(etype: str, props: dict[str, Any]) -> tuple[str, ...]:
    """The non-empty string categories an event names (see :attr:`Event.categories`)."""
    if etype == "order_completed":
        items = props.get("items")
        if type(items) is not list:
            return ()
        found = (item.get("category") for item in items if type(item) is dict)
        return tuple(c for c in found if type(c) is str and c)
    if etype == "product_view" or etype == "add_to_cart":
        c = props.get("category")
        return (c,) if type(c) is str and c else ()
    return ()


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a message cannot be applied: a reason code and a human detail."""

    reason: Reason
    detail: str
    truncated: bool = False


@dataclass(frozen=True, slots=True)
class Limits:
    """Input limits from the config (CONTRACT §2, issues 6 and 12)."""

    max_event_bytes: int = 65536
    max_traits: int = 100
    max_trait_length: int = 1024
    max_money: float = MAX_MONEY
    #: a timestamp later than the receiver's wall clock plus this is ``timestamp_out_of_range``
    #: (checked only where a wall clock is given: not in ``replay``)
    max_future_skew_us: int = 24 * 3_600_000_000

    @classmethod
    def of(cls, config: Any) -> Limits:
        """The limits of a :class:`~segmentflow.config.SegmentConfig`."""
        return cls(
            config.max_event_bytes,
            config.max_traits,
            config.max_trait_length,
            config.max_money,
            config.max_future_skew_us,
        )


DEFAULT_LIMITS = Limits()


def _from_validation(error: ValidationError, where: str) -> Rejection:
    first = error.errors()[0]
    loc = ".".join(str(part) for part in first["loc"])
    field = f"{where}.{loc}" if where and loc else (loc or where)
    kind = first["type"]
    if kind == "missing":
        return Rejection(Reason.MISSING_FIELD, f"missing field {field!r}")
    if kind == "invalid_money":
        return Rejection(Reason.INVALID_MONEY, f"{field}: {first['msg']}")
    return Rejection(Reason.INVALID_FIELD, f"{field}: {first['msg']}")


def parse_json(raw: bytes) -> Any | Rejection:
    """Parse JSON bytes, telling invalid UTF-8 apart from invalid JSON."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as uexc:
            return Rejection(Reason.INVALID_UTF8, f"value is not valid UTF-8 at byte {uexc.start}")
        return Rejection(Reason.INVALID_JSON, f"value is not valid JSON: {exc}")


# -- fast path -----------------------------------------------------------------------------------
# The common, valid event is checked by hand (no pydantic model is built): the checks below
# accept a strict subset of what the models accept and give the same Event. Anything they do not
# recognise returns None and the full validation (models, reason codes, details) decides.


class _Unusual(Exception):
    """The fast path declines: the full validation decides."""


def _str(props: dict[str, Any], name: str) -> str:
    value = props.get(name)
    if type(value) is not str:
        raise _Unusual
    return value


def _opt_str(props: dict[str, Any], name: str) -> None:
    value = props.get(name)
    if value is not None and type(value) is not str:
        raise _Unusual


def _amount(value: Any, max_money: float) -> float:
    try:
        return _money(value, max_money)
    except PydanticCustomError:
        raise _Unusual from None


def _opt_money(props: dict[str, Any], name: str, max_money: float) -> None:
    value = props.get(name)
    if value is not None:
        _amount(value, max_money)


def _qty(value: Any) -> None:
    try:
        _quantity(value)
    except PydanticCustomError:
        raise _Unusual from None


_Fast = tuple[float, dict[str, Any] | None, bool]
_PLAIN: _Fast = (0.0, None, False)


def _page_view(p: dict[str, Any], m: float) -> _Fast:
    _str(p, "url")
    _opt_str(p, "referrer")
    return _PLAIN


def _product_view(p: dict[str, Any], m: float) -> _Fast:
    _str(p, "product_id")
    _opt_str(p, "category")
    _opt_money(p, "price", m)
    return _PLAIN


def _add_to_cart(p: dict[str, Any], m: float) -> _Fast:
    _str(p, "product_id")
    _qty(p.get("quantity"))
    _amount(p.get("price"), m)
    return _PLAIN


def _product_id(p: dict[str, Any], m: float) -> _Fast:
    _str(p, "product_id")
    return _PLAIN


def _checkout(p: dict[str, Any], m: float) -> _Fast:
    _opt_money(p, "cart_value", m)
    return _PLAIN


def _search(p: dict[str, Any], m: float) -> _Fast:
    _str(p, "query")
    return _PLAIN


_TRAIT_TYPES = (str, bool, int, float)


def _identify(p: dict[str, Any], m: float) -> _Fast:
    traits = p.get("traits")
    if type(traits) is not dict:
        raise _Unusual
    for value in traits.values():
        if value is not None and type(value) not in _TRAIT_TYPES:
            raise _Unusual
    return 0.0, dict(traits), False


def _alias(p: dict[str, Any], m: float) -> _Fast:
    previous = _str(p, "previous_id")
    if not previous or len(previous) > 256:
        raise _Unusual
    return _PLAIN


def _email(p: dict[str, Any], m: float) -> _Fast:
    _str(p, "campaign_id")
    return _PLAIN


def _email_clicked(p: dict[str, Any], m: float) -> _Fast:
    _str(p, "campaign_id")
    _str(p, "url")
    return _PLAIN


def _email_bounced(p: dict[str, Any], m: float) -> _Fast:
    _str(p, "campaign_id")
    bounce = p.get("bounce_type")
    if bounce is not None and type(bounce) is not str:
        raise _Unusual
    return 0.0, None, bounce == "hard"


def _order_completed(p: dict[str, Any], m: float) -> _Fast:
    _str(p, "order_id")
    _str(p, "currency")
    revenue = _amount(p.get("revenue"), m)
    items = p.get("items")
    if items is not None:
        if type(items) is not list:
            raise _Unusual
        for item in items:
            if type(item) is not dict:
                raise _Unusual
            _str(item, "product_id")
            _opt_str(item, "category")
            _qty(item.get("quantity"))
            _amount(item.get("price"), m)
    return revenue, None, False


def _order_refunded(p: dict[str, Any], m: float) -> _Fast:
    _str(p, "order_id")
    return _amount(p.get("amount"), m), None, False


_FAST_TYPES: dict[str, tuple[str, Any]] = {
    "page_view": ("website", _page_view),
    "product_view": ("website", _product_view),
    "add_to_cart": ("website", _add_to_cart),
    "remove_from_cart": ("website", _product_id),
    "checkout_started": ("website", _checkout),
    "search": ("website", _search),
    "identify": ("website", _identify),
    "alias": ("website", _alias),
    "email_sent": ("email", _email),
    "email_delivered": ("email", _email),
    "email_opened": ("email", _email),
    "email_clicked": ("email", _email_clicked),
    "email_bounced": ("email", _email_bounced),
    "email_unsubscribed": ("email", _email),
    "email_complained": ("email", _email),
    "order_completed": ("purchase", _order_completed),
    "order_refunded": ("purchase", _order_refunded),
}
assert _FAST_TYPES.keys() == EVENT_TYPES.keys()
_NO_PROPS: dict[str, Any] = {}


def _fast_event(
    data: dict[str, Any], topic_kind: str | None, limits: Limits, now_us: int | None = None
) -> Event | None:
    """The event for a plainly valid ``data``, or ``None`` (then the full path decides)."""
    event_id = data.get("event_id")
    customer_id = data.get("customer_id")
    etype = data.get("type")
    timestamp = data.get("timestamp")
    props = data.get("properties", _NO_PROPS)
    anonymous_id = data.get("anonymous_id")
    if anonymous_id is not None and (
        type(anonymous_id) is not str or not anonymous_id or len(anonymous_id) > 256
    ):
        return None
    if (
        type(event_id) is not str
        or type(customer_id) is not str
        or type(timestamp) is not str
        or type(props) is not dict
        or not event_id
        or not customer_id
        or len(customer_id) > 256
    ):
        return None
    if type(etype) is not str:
        return None
    entry = _FAST_TYPES.get(etype)
    if entry is None or (topic_kind is not None and entry[0] != topic_kind):
        return None
    try:
        amount, traits, hard = entry[1](props, limits.max_money)
        ts = parse_rfc3339(timestamp)
    except (_Unusual, TimestampError):
        return None
    if now_us is not None and ts > now_us + limits.max_future_skew_us:
        return None
    if traits is not None and (
        len(traits) > limits.max_traits
        or any(len(name) > limits.max_trait_length for name in traits)
        or any(type(v) is str and len(v) > limits.max_trait_length for v in traits.values())
    ):
        return None
    previous_id = props["previous_id"] if etype == "alias" else None
    categories = _categories(etype, props) if props else ()
    return Event(
        event_id,
        customer_id,
        etype,
        ts,
        amount,
        traits,
        hard,
        previous_id,
        anonymous_id,
        categories,
    )


def validate_event(
    data: Any,
    topic_kind: str | None,
    limits: Limits = DEFAULT_LIMITS,
    now_us: int | None = None,
    control: bool = False,
) -> Event | Rejection:
    """Validate a parsed JSON value as a CONTRACT §2 event arriving on ``topic_kind``.

    ``topic_kind=None`` skips the topic check (used by ``replay``, whose file has no topics).
    ``now_us`` is the receiving process's wall clock (epoch µs): a timestamp more than
    ``limits.max_future_skew_us`` after it is ``timestamp_out_of_range``; ``None`` (``replay``)
    skips that check. ``control`` also accepts the control records of
    :data:`~segmentflow.schemas.events.CONTROL_TYPES` (the worker only).
    """
    if type(data) is dict:
        event = _fast_event(data, topic_kind, limits, now_us)
        if event is not None:
            return event
    return validate_event_full(data, topic_kind, limits, now_us, control)


def validate_event_full(
    data: Any,
    topic_kind: str | None,
    limits: Limits = DEFAULT_LIMITS,
    now_us: int | None = None,
    control: bool = False,
) -> Event | Rejection:
    """:func:`validate_event` through the pydantic models only (no fast path): the reference
    the fast path must agree with."""
    if not isinstance(data, dict):
        return Rejection(Reason.NOT_AN_OBJECT, f"expected a JSON object, got {type(data).__name__}")
    try:
        envelope = Envelope.model_validate(data)
    except ValidationError as exc:
        return _from_validation(exc, "")
    entry = EVENT_TYPES.get(envelope.type)
    if entry is None and control:
        entry = CONTROL_TYPES.get(envelope.type)
    if entry is None:
        return Rejection(Reason.UNKNOWN_TYPE, f"unknown event type {envelope.type[:64]!r}")
    kind, model = entry
    if topic_kind is not None and kind != topic_kind:
        return Rejection(
            Reason.WRONG_TOPIC,
            f"type {envelope.type!r} belongs on the {kind} topic, not {topic_kind}",
        )
    try:
        ts = parse_rfc3339(envelope.timestamp)
    except TimestampError as exc:
        return Rejection(Reason(exc.code), str(exc))
    if now_us is not None and ts > now_us + limits.max_future_skew_us:
        skew_h = limits.max_future_skew_us / 3_600_000_000
        return Rejection(
            Reason.TIMESTAMP_OUT_OF_RANGE,
            f"timestamp {envelope.timestamp[:40]!r} is more than max_future_skew ({skew_h:g} h) "
            "after this process's clock",
        )
    try:
        props = model.model_validate(envelope.properties, context={"max_money": limits.max_money})
    except ValidationError as exc:
        return _from_validation(exc, "properties")
    amount = 0.0
    traits = None
    hard = False
    previous_id = props.previous_id if isinstance(props, Alias) else None
    if isinstance(props, Identify):
        traits = props.traits
        if len(traits) > limits.max_traits:
            return Rejection(Reason.STATE_LIMIT, f"{len(traits)} traits (max {limits.max_traits})")
        for name, value in traits.items():
            if len(name) > limits.max_trait_length or (
                isinstance(value, str) and len(value) > limits.max_trait_length
            ):
                return Rejection(
                    Reason.STATE_LIMIT,
                    f"trait {name[:32]!r} longer than {limits.max_trait_length} characters",
                )
    elif envelope.type == "order_completed":
        amount = props.revenue  # type: ignore[attr-defined]
    elif envelope.type == "order_refunded":
        amount = props.amount  # type: ignore[attr-defined]
    elif envelope.type == "email_bounced":
        hard = props.bounce_type == "hard"  # type: ignore[attr-defined]
    return Event(
        envelope.event_id,
        envelope.customer_id,
        envelope.type,
        ts,
        amount,
        traits,
        hard,
        previous_id,
        envelope.anonymous_id,
        _categories(envelope.type, envelope.properties),
    )


def decode_message(
    value: bytes | None,
    key: bytes | None,
    topic_kind: str | None,
    limits: Limits = DEFAULT_LIMITS,
    check_key: bool = True,
    now_us: int | None = None,
    control: bool = False,
) -> Event | Rejection:
    """Decode one Kafka message (value bytes and key) into an event or a rejection (``now_us``:
    see :func:`validate_event`)."""
    if value is None:
        return Rejection(Reason.INVALID_JSON, "message has no value (tombstone)")
    if len(value) > limits.max_event_bytes:
        return Rejection(
            Reason.OVERSIZED,
            f"message is {len(value)} bytes, over max_event_bytes={limits.max_event_bytes}",
            truncated=True,
        )
    data = parse_json(value)
    if isinstance(data, Rejection):
        return data
    result = validate_event(data, topic_kind, limits, now_us, control)
    if isinstance(result, Rejection) or not check_key:
        return result
    if not key:
        return Rejection(Reason.MISSING_KEY, "message key is missing; it must equal customer_id")
    if key != result.customer_id.encode("utf-8"):
        return Rejection(Reason.KEY_MISMATCH, "message key differs from customer_id")
    return result
