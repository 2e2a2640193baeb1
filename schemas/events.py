"""Input event schemas (CONTRACT §2): one strict pydantic model per event type's properties.

Strings are strings, quantities are integers >= 0, money is a finite number in
``0..max_money`` or a decimal string of one. Unknown extra fields are ignored.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictStr,
    ValidationInfo,
)
from pydantic_core import PydanticCustomError

_DECIMAL = re.compile(r"(?:[0-9]+(?:\.[0-9]+)?|\.[0-9]+)", re.ASCII)


#: default ``max_money`` (CONTRACT §2, config key of the same name)
MAX_MONEY = 1e9


def _money(value: Any, max_money: float = MAX_MONEY) -> float:
    if isinstance(value, bool):
        raise PydanticCustomError("invalid_money", "money must be a number, not a boolean")
    if isinstance(value, int | float):
        if value < 0 or (isinstance(value, float) and not math.isfinite(value)):
            raise PydanticCustomError("invalid_money", "money must be finite and >= 0")
        amount = float(value) if value <= max_money else math.inf
    elif isinstance(value, str):
        if not _DECIMAL.fullmatch(value):
            raise PydanticCustomError("invalid_money", "money string must be a decimal >= 0")
        amount = float(Decimal(value))
    else:
        raise PydanticCustomError("invalid_money", "money must be a JSON number or decimal string")
    if not amount <= max_money:  # also catches an int or string too large to be finite
        raise PydanticCustomError(
            "invalid_money", "money must be <= max_money ({max_money})", {"max_money": max_money}
        )
    return amount


def _money_in_context(value: Any, info: ValidationInfo) -> float:
    """:func:`_money` with ``max_money`` from the validation context (default :data:`MAX_MONEY`)."""
    context = info.context
    return _money(value, context.get("max_money", MAX_MONEY) if context else MAX_MONEY)


def _quantity(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise PydanticCustomError("invalid_field", "quantity must be an integer")
    if value < 0:
        raise PydanticCustomError("invalid_field", "quantity must be >= 0")
    return value


Money = Annotated[float, BeforeValidator(_money_in_context)]
Quantity = Annotated[int, BeforeValidator(_quantity)]
TraitValue = StrictStr | StrictBool | int | float | None


class _Props(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)


class PageView(_Props):
    url: StrictStr
    referrer: StrictStr | None = None


class ProductView(_Props):
    product_id: StrictStr
    category: StrictStr | None = None
    price: Money | None = None


class AddToCart(_Props):
    product_id: StrictStr
    quantity: Quantity
    price: Money


class RemoveFromCart(_Props):
    product_id: StrictStr


class CheckoutStarted(_Props):
    cart_value: Money | None = None


class Search(_Props):
    query: StrictStr


class Identify(_Props):
    traits: dict[StrictStr, TraitValue]


class Alias(_Props):
    """``previous_id`` and the event's ``customer_id`` are the same person (CONTRACT §2)."""

    previous_id: StrictStr = Field(min_length=1, max_length=256)


class EmailEvent(_Props):
    campaign_id: StrictStr


class EmailClicked(EmailEvent):
    url: StrictStr


class EmailBounced(EmailEvent):
    bounce_type: StrictStr | None = None


class OrderItem(_Props):
    product_id: StrictStr
    category: StrictStr | None = None
    quantity: Quantity
    price: Money


class OrderCompleted(_Props):
    order_id: StrictStr
    revenue: Money
    currency: StrictStr
    items: list[OrderItem] | None = None


class OrderRefunded(_Props):
    order_id: StrictStr
    amount: Money


class Envelope(BaseModel):
    """The common fields of every event (timestamp checked separately, see ``timefmt``)."""

    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)

    event_id: StrictStr = Field(min_length=1)
    customer_id: StrictStr = Field(min_length=1, max_length=256)
    type: StrictStr
    timestamp: StrictStr
    properties: dict[str, Any] = Field(default_factory=dict)
    anonymous_id: StrictStr | None = Field(default=None, min_length=1, max_length=256)


TOPIC_KINDS = ("website", "email", "purchase")

#: event type -> (topic kind, properties model)
EVENT_TYPES: dict[str, tuple[str, type[_Props]]] = {
    "page_view": ("website", PageView),
    "product_view": ("website", ProductView),
    "add_to_cart": ("website", AddToCart),
    "remove_from_cart": ("website", RemoveFromCart),
    "checkout_started": ("website", CheckoutStarted),
    "search": ("website", Search),
    "identify": ("website", Identify),
    "alias": ("website", Alias),
    "email_sent": ("email", EmailEvent),
    "email_delivered": ("email", EmailEvent),
    "email_opened": ("email", EmailEvent),
    "email_clicked": ("email", EmailClicked),
    "email_bounced": ("email", EmailBounced),
    "email_unsubscribed": ("email", EmailEvent),
    "email_complained": ("email", EmailEvent),
    "order_completed": ("purchase", OrderCompleted),
    "order_refunded": ("purchase", OrderRefunded),
}


class Forget(_Props):
    """``forget`` (extension): erase the customer (``segmentflow forget``), applied by its owner."""


#: control records on the input topics (extensions written by segmentflow's own tools): only
#: the worker accepts them (``control=True``); the collector never produces one
CONTROL_TYPES: dict[str, tuple[str, type[_Props]]] = {"forget": ("website", Forget)}
FORGET = "forget"


def topic_kind_of(event_type: str) -> str | None:
    """The topic kind (``website``/``email``/``purchase``) an event type belongs to."""
    entry = EVENT_TYPES.get(event_type)
    return entry[0] if entry else None
