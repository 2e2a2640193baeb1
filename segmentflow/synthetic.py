"""Deterministic synthetic customer event streams (demo, tests, benchmarks).

The generator produces CONTRACT §2 input events for the three input topics (``website``,
``email``, ``purchase``) for a population of customers, each drawn from one behaviour
*archetype* (a persona a clustering model should be able to recover):

``window_shopper``
    many page/product views and searches, rare orders.
``bargain_hunter``
    many cart adds/removes and checkouts, frequent small orders of cheap products.
``loyal_high_value``
    regular (low-variance inter-order time) large orders of expensive products; often VIP.
``email_engaged``
    receives, opens and clicks many campaign emails (clicks lead to sessions), moderate buying.
``dormant``
    a short burst of activity with orders early in the window, then nothing on the website or
    purchase topics (so lifecycle goes ``at_risk`` then ``churned``); campaign emails are still
    sent and delivered to them but never opened.
``one_time_buyer``
    a single order on the first visit, then very little activity.

Everything is derived from the ``seed`` with :class:`random.Random` instances seeded by strings
(SHA-512 based, independent of ``PYTHONHASHSEED``), so the same arguments always give
byte-identical output. The module imports nothing from the engine.

Optionally, malformed messages (``bad_ratio``) and exact re-sends of valid messages are mixed in
to exercise dead-lettering and deduplication; each bad message carries the expected dead-letter
reason code (``expected_reason``, as in ``segmentflow.schemas.reasons``) and a finer ``bad_kind``.
"""

from __future__ import annotations

import argparse
import bisect
import gc
import math
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

__all__ = [
    "ARCHETYPES",
    "BAD_KINDS",
    "DEFAULT_MIX",
    "GeneratedMessage",
    "archetype_of",
    "customer_id_for",
    "generate",
    "main",
    "manifest",
    "preference_of",
    "to_jsonl_lines",
    "write_jsonl",
]

ARCHETYPES: tuple[str, ...] = (
    "window_shopper",
    "bargain_hunter",
    "loyal_high_value",
    "email_engaged",
    "dormant",
    "one_time_buyer",
)
"""Names of the behaviour archetypes, in a fixed order."""

DEFAULT_MIX: Mapping[str, float] = {
    "window_shopper": 0.22,
    "bargain_hunter": 0.18,
    "loyal_high_value": 0.12,
    "email_engaged": 0.18,
    "dormant": 0.15,
    "one_time_buyer": 0.15,
}
"""Default share of each archetype in the population (weights; need not sum to 1)."""

BAD_KINDS: Mapping[str, str] = {
    "invalid_json": "invalid_json",
    "truncated_json": "invalid_json",
    "invalid_utf8": "invalid_utf8",
    "not_an_object": "not_an_object",
    "missing_field": "missing_field",
    "numeric_customer_id": "invalid_field",
    "numeric_event_id": "invalid_field",
    "string_quantity": "invalid_field",
    "naive_timestamp": "naive_timestamp",
    "bad_timestamp": "invalid_timestamp",
    "timestamp_year_2200": "timestamp_out_of_range",
    "negative_revenue": "invalid_money",
    "unknown_type": "unknown_type",
    "wrong_topic": "wrong_topic",
    "missing_key": "missing_key",
    "key_mismatch": "key_mismatch",
    "oversized": "oversized",
}
"""Kinds of malformed messages (``bad_kind``) and the dead-letter reason each should get."""

_DAY = 86_400
_US = 1_000_000
_GOLDEN = 0.6180339887498949
_HHMM = [f"{m // 60:02d}:{m % 60:02d}:" for m in range(1440)]
_SS = [f"{s:02d}Z" for s in range(60)]


@dataclass(frozen=True, slots=True)
class GeneratedMessage:
    """One message as it would be produced to an input topic.

    Attributes
    ----------
    topic_kind : str
        ``"website"``, ``"email"`` or ``"purchase"``: the input topic it goes to.
    key : bytes or None
        The Kafka message key (the customer id in UTF-8 for valid messages).
    value : bytes
        The message value (compact JSON for valid messages).
    event : dict or None
        The decoded event for valid messages (and duplicates); ``None`` for bad messages.
    expected_reason : str or None
        For bad messages, the dead-letter reason code a conforming decoder gives it.
    bad_kind : str or None
        For bad messages, the finer kind of defect (a key of :data:`BAD_KINDS`).
    duplicate : bool
        ``True`` for an exact re-send (same bytes, same ``event_id``) of the message before it.
    at_us : int
        Position in event time, epoch microseconds (the event timestamp for valid messages;
        the neighbouring valid event's timestamp for bad ones).
    """

    topic_kind: str
    key: bytes | None
    value: bytes
    event: dict[str, Any] | None
    expected_reason: str | None = None
    bad_kind: str | None = None
    duplicate: bool = False
    at_us: int = 0

    @property
    def valid(self) -> bool:
        """Whether this message is a valid event (duplicates included)."""
        return self.event is not None


@dataclass(frozen=True, slots=True)
class _Persona:
    browse_rate: float  # sessions per day while active
    session_steps: float  # mean number of steps after the landing page
    step_weights: tuple[float, float, float]  # page_view, product_view, search
    cart_p: float  # add_to_cart probability per product view
    remove_p: float  # remove_from_cart probability per cart add
    checkout_p: float  # abandoned checkout probability per session with a cart
    order_rate: float  # orders per day while active
    order_shape: float  # gamma shape of inter-order times (1 = Poisson, larger = regular)
    items_mean: float  # mean number of distinct items per order
    tier: str  # "low" | "any" | "high": price range of products bought
    qty_max: int
    refund_p: float
    audience: float  # probability of being targeted by a campaign
    open_p: float
    click_p: float  # given opened
    click_session_p: float  # given clicked: a website session follows
    existing_p: float  # share of customers already known at the window start
    new_until: float  # new customers first appear uniformly before this fraction of the window
    burst_days: tuple[float, float] | None  # active only for this many days (dormant)
    one_order: bool
    vip_p: float
    plans: tuple[float, float, float]  # free, plus, premium
    age_mean: float


_PERSONAS: dict[str, _Persona] = {
    "window_shopper": _Persona(
        browse_rate=0.05,
        session_steps=6.0,
        step_weights=(0.35, 0.43, 0.22),
        cart_p=0.05,
        remove_p=0.45,
        checkout_p=0.1,
        order_rate=0.004,
        order_shape=1.0,
        items_mean=1.2,
        tier="any",
        qty_max=1,
        refund_p=0.05,
        audience=0.2,
        open_p=0.2,
        click_p=0.2,
        click_session_p=0.6,
        existing_p=0.4,
        new_until=0.7,
        burst_days=None,
        one_order=False,
        vip_p=0.01,
        plans=(0.8, 0.17, 0.03),
        age_mean=31.0,
    ),
    "bargain_hunter": _Persona(
        browse_rate=0.03,
        session_steps=4.0,
        step_weights=(0.2, 0.6, 0.2),
        cart_p=0.35,
        remove_p=0.35,
        checkout_p=0.45,
        order_rate=0.05,
        order_shape=2.0,
        items_mean=1.4,
        tier="low",
        qty_max=3,
        refund_p=0.08,
        audience=0.3,
        open_p=0.35,
        click_p=0.35,
        click_session_p=0.7,
        existing_p=0.4,
        new_until=0.7,
        burst_days=None,
        one_order=False,
        vip_p=0.02,
        plans=(0.85, 0.14, 0.01),
        age_mean=36.0,
    ),
    "loyal_high_value": _Persona(
        browse_rate=0.03,
        session_steps=4.0,
        step_weights=(0.3, 0.6, 0.1),
        cart_p=0.2,
        remove_p=0.1,
        checkout_p=0.3,
        order_rate=0.04,
        order_shape=6.0,
        items_mean=2.5,
        tier="high",
        qty_max=2,
        refund_p=0.03,
        audience=0.25,
        open_p=0.4,
        click_p=0.2,
        click_session_p=0.6,
        existing_p=0.6,
        new_until=0.5,
        burst_days=None,
        one_order=False,
        vip_p=0.55,
        plans=(0.2, 0.4, 0.4),
        age_mean=45.0,
    ),
    "email_engaged": _Persona(
        browse_rate=0.02,
        session_steps=3.0,
        step_weights=(0.4, 0.45, 0.15),
        cart_p=0.12,
        remove_p=0.2,
        checkout_p=0.3,
        order_rate=0.02,
        order_shape=1.0,
        items_mean=1.5,
        tier="any",
        qty_max=2,
        refund_p=0.05,
        audience=0.5,
        open_p=0.75,
        click_p=0.45,
        click_session_p=0.8,
        existing_p=0.5,
        new_until=0.6,
        burst_days=None,
        one_order=False,
        vip_p=0.05,
        plans=(0.5, 0.4, 0.1),
        age_mean=41.0,
    ),
    "dormant": _Persona(
        browse_rate=0.4,
        session_steps=5.0,
        step_weights=(0.35, 0.5, 0.15),
        cart_p=0.2,
        remove_p=0.25,
        checkout_p=0.35,
        order_rate=0.15,
        order_shape=1.0,
        items_mean=1.5,
        tier="any",
        qty_max=2,
        refund_p=0.05,
        audience=0.2,
        open_p=0.3,
        click_p=0.25,
        click_session_p=0.6,
        existing_p=0.0,
        new_until=0.15,
        burst_days=(5.0, 20.0),
        one_order=False,
        vip_p=0.02,
        plans=(0.7, 0.25, 0.05),
        age_mean=35.0,
    ),
    "one_time_buyer": _Persona(
        browse_rate=0.02,
        session_steps=3.0,
        step_weights=(0.4, 0.45, 0.15),
        cart_p=0.1,
        remove_p=0.3,
        checkout_p=0.2,
        order_rate=0.0,
        order_shape=1.0,
        items_mean=1.5,
        tier="any",
        qty_max=2,
        refund_p=0.1,
        audience=0.2,
        open_p=0.12,
        click_p=0.1,
        click_session_p=0.5,
        existing_p=0.0,
        new_until=0.8,
        burst_days=None,
        one_order=True,
        vip_p=0.0,
        plans=(0.9, 0.09, 0.01),
        age_mean=33.0,
    ),
}

_CATEGORIES: tuple[tuple[str, float], ...] = (
    ("electronics", 140.0),
    ("fashion", 45.0),
    ("home", 55.0),
    ("beauty", 18.0),
    ("sports", 50.0),
    ("books", 14.0),
    ("toys", 24.0),
    ("grocery", 7.0),
)
_SEARCH_WORDS: dict[str, tuple[str, ...]] = {
    "electronics": ("headphones", "usb c charger", "smartwatch", "laptop stand", "4k monitor"),
    "fashion": ("sneakers", "rain jacket", "linen shirt", "wool scarf", "jeans slim"),
    "home": ("desk lamp", "coffee grinder", "bed sheets", "plant pot", "towels"),
    "beauty": ("sunscreen", "face serum", "shampoo", "lip balm", "perfume"),
    "sports": ("yoga mat", "running shoes", "dumbbells", "water bottle", "bike light"),
    "books": ("cookbook", "sci-fi novel", "travel guide", "kids book", "biography"),
    "toys": ("lego", "puzzle 1000", "board game", "plush", "rc car"),
    "grocery": ("espresso beans", "green tea", "olive oil", "dark chocolate", "pasta"),
}
_PAGES: tuple[str, ...] = ("/", "/sale", "/new", "/account", "/help", "/stores", "/gift-cards")
_REFERRERS: tuple[str, ...] = (
    "https://www.google.com/",
    "https://www.instagram.com/",
    "https://www.bing.com/",
    "https://www.facebook.com/",
    "https://duckduckgo.com/",
)
_SITE = "https://shop.example.com"
_COUNTRIES: tuple[tuple[str, float, tuple[str, ...]], ...] = (
    ("DE", 0.25, ("Berlin", "Hamburg", "Munich", "Cologne", "Leipzig")),
    ("FR", 0.14, ("Paris", "Lyon", "Marseille", "Toulouse", "Lille")),
    ("US", 0.18, ("New York", "Chicago", "Austin", "Seattle", "Boston")),
    ("GB", 0.14, ("London", "Manchester", "Bristol", "Leeds", "Glasgow")),
    ("NL", 0.1, ("Amsterdam", "Rotterdam", "Utrecht", "Eindhoven")),
    ("ES", 0.1, ("Madrid", "Barcelona", "Valencia", "Seville")),
    ("IT", 0.05, ("Milan", "Rome", "Turin", "Bologna")),
    ("PL", 0.04, ("Warsaw", "Krakow", "Gdansk")),
)
_FIRST = (
    "anna",
    "ben",
    "clara",
    "david",
    "emma",
    "felix",
    "greta",
    "hugo",
    "ines",
    "jonas",
    "karla",
    "leo",
    "mia",
    "noah",
    "olga",
    "paul",
    "rosa",
    "sam",
    "tara",
    "yusuf",
)
_LAST = (
    "schmidt",
    "martin",
    "smith",
    "jansen",
    "garcia",
    "rossi",
    "nowak",
    "muller",
    "dubois",
    "brown",
    "devries",
    "lopez",
    "bianchi",
    "kowalski",
    "weber",
    "taylor",
)
_GENDERS = ("female", "male", "non_binary", "undisclosed")
_GENDER_W = (0.48, 0.46, 0.02, 0.04)
_PLANS = ("free", "plus", "premium")
# Hour-of-day weights (UTC) for sessions: quiet nights, lunch bump, evening peak.
_HOUR_CUM: list[float] = []
_acc = 0.0
for _w in (1, 0.6, 0.4, 0.3, 0.3, 0.5, 1.2, 2.2, 3, 3.4, 3.6, 3.8,
           4.4, 4.2, 3.8, 3.6, 3.8, 4.2, 4.8, 5.6, 6.2, 5.8, 4.2, 2.2):  # fmt: skip
    _acc += _w
    _HOUR_CUM.append(_acc)
del _acc, _w


# --------------------------------------------------------------------------------------------
# archetypes


def customer_id_for(index: int) -> str:
    """Customer id of the customer with 1-based ``index``, e.g. ``c-00042``."""
    return f"c-{index:05d}"


def _normalised_mix(mix: Mapping[str, float] | None) -> list[tuple[str, float]]:
    source = DEFAULT_MIX if mix is None else mix
    unknown = sorted(set(source) - set(ARCHETYPES))
    if unknown:
        raise ValueError(f"unknown archetype(s) in mix: {', '.join(unknown)}")
    weights = [(name, float(source.get(name, 0.0))) for name in ARCHETYPES]
    if any(not math.isfinite(w) or w < 0 for _, w in weights):
        raise ValueError("archetype weights must be finite and >= 0")
    total = sum(w for _, w in weights)
    if total <= 0:
        raise ValueError("archetype weights must not all be zero")
    cum = 0.0
    out = []
    for name, w in weights:
        if w > 0:
            cum += w / total
            out.append((name, cum))
    return out


def _archetype(index: int, seed: int, cum: list[tuple[str, float]]) -> str:
    # Low-discrepancy (golden ratio) sequence: every prefix of the population matches the mix
    # closely, while the order looks random. Per-customer, so no population size is needed.
    phase = random.Random(f"segmentflow/{seed}/archetypes").random()
    u = (phase + index * _GOLDEN) % 1.0
    for name, c in cum:
        if u < c:
            return name
    return cum[-1][0]


def archetype_of(customer_id: str, seed: int, mix: Mapping[str, float] | None = None) -> str:
    """Archetype of a generated customer.

    Parameters
    ----------
    customer_id : str
        A customer id such as ``"c-00042"`` (see :func:`customer_id_for`).
    seed : int
        The seed passed to :func:`generate`.
    mix : mapping of str to float, optional
        The archetype mix passed to :func:`generate` (default :data:`DEFAULT_MIX`).

    Returns
    -------
    str
        One of :data:`ARCHETYPES`.
    """
    if not customer_id.startswith("c-") or not customer_id[2:].isdigit():
        raise ValueError(f"not a generated customer id: {customer_id!r}")
    return _archetype(int(customer_id[2:]), seed, _normalised_mix(mix))


#: categories each archetype favours when :func:`generate` is called with ``preferences=True``;
#: a customer's preferred category is drawn from its archetype's tuple (:func:`preference_of`)
PREFERENCES: Mapping[str, tuple[str, ...]] = {
    "window_shopper": ("fashion", "beauty", "home"),
    "bargain_hunter": ("grocery", "toys", "books"),
    "loyal_high_value": ("electronics", "sports", "home"),
    "email_engaged": ("beauty", "books", "fashion"),
    "dormant": ("home", "books"),
    "one_time_buyer": ("electronics", "toys"),
}
#: with ``preferences=True``, the share of product picks taken from the preferred category
PREFERENCE_AFFINITY = 0.6


def preference_of(customer_id: str, seed: int, mix: Mapping[str, float] | None = None) -> str:
    """The preferred category of a generated customer (ground truth of ``preferences=True``).

    Examples
    --------
    >>> preference_of("c-00001", 7) in PREFERENCES[archetype_of("c-00001", 7)]
    True
    """
    options = PREFERENCES[archetype_of(customer_id, seed, mix)]
    return random.Random(f"segmentflow/{seed}/preference/{customer_id}").choice(options)


def manifest(customers: int, seed: int, mix: Mapping[str, float] | None = None) -> dict[str, str]:
    """Map every generated customer id to its archetype (ground truth for clustering, e.g. ARI).

    Parameters
    ----------
    customers : int
        Number of customers, as passed to :func:`generate`.
    seed : int
        The seed passed to :func:`generate`.
    mix : mapping of str to float, optional
        The archetype mix passed to :func:`generate`.

    Returns
    -------
    dict of str to str
        ``{customer_id: archetype}`` in customer order.
    """
    cum = _normalised_mix(mix)
    return {customer_id_for(i): _archetype(i, seed, cum) for i in range(1, customers + 1)}


# --------------------------------------------------------------------------------------------
# time helpers


class _Intensity:
    """Piecewise-constant daily rate multiplier with its cumulative integral and inverse."""

    __slots__ = ("cum", "mult")

    def __init__(self, mult: list[float]) -> None:
        self.mult = mult
        self.cum = [0.0]
        for m in mult:
            self.cum.append(self.cum[-1] + m)

    def integral(self, t: float) -> float:
        """Integral of the multiplier over [0, t] (t in days)."""
        d = min(int(t), len(self.mult) - 1)
        return self.cum[d] + self.mult[d] * (t - d)

    def inverse(self, u: float) -> float:
        """The t with integral(t) = u, or +inf beyond the horizon."""
        if u >= self.cum[-1]:
            return math.inf
        d = bisect.bisect_right(self.cum, u) - 1
        return d + (u - self.cum[d]) / self.mult[d]


@dataclass(slots=True)
class _Clock:
    base_s: int  # midnight UTC on or before the window start
    start_s: int
    end_s: int
    n_days: int
    day_str: list[str]
    orders: _Intensity
    sessions: _Intensity


def _make_clock(start: datetime, days: int) -> _Clock:
    if start.tzinfo is None:
        start = start.replace(tzinfo=UTC)
    start_s = math.floor(start.timestamp())
    end_s = start_s + days * _DAY
    base_s = start_s - start_s % _DAY
    n_days = (end_s - base_s + _DAY - 1) // _DAY + 1
    base = datetime.fromtimestamp(base_s, UTC)
    day_str: list[str] = []
    order_mult: list[float] = []
    session_mult: list[float] = []
    for d in range(n_days + 1):
        day = base + timedelta(days=d)
        day_str.append(day.strftime("%Y-%m-%dT"))
        weekend = day.weekday() >= 5
        season = {11: 1.6, 12: 1.9, 1: 0.8}.get(day.month, 1.0)
        if day.month == 11 and day.weekday() == 4 and 23 <= day.day <= 29:
            season = 3.5  # Black Friday
        order_mult.append(season * (1.4 if weekend else 1.0))
        session_mult.append((1.0 + (season - 1.0) * 0.4) * (1.15 if weekend else 1.0))
    return _Clock(
        base_s, start_s, end_s, n_days, day_str, _Intensity(order_mult), _Intensity(session_mult)
    )


# --------------------------------------------------------------------------------------------
# catalogue


@dataclass(frozen=True, slots=True)
class _Product:
    product_id: str
    category: str
    price: float


def _catalogue(seed: int) -> tuple[list[_Product], list[_Product]]:
    rng = random.Random(f"segmentflow/{seed}/catalogue")
    products: list[_Product] = []
    for n in range(240):
        category, median = _CATEGORIES[n % len(_CATEGORIES)]
        raw = median * math.exp(rng.gauss(0.0, 0.6))
        price = max(1.0, float(round(raw))) - 0.01
        products.append(_Product(f"p-{n + 1:04d}", category, round(price, 2)))
    by_price = sorted(products, key=lambda p: (p.price, p.product_id))
    return products, by_price


# --------------------------------------------------------------------------------------------
# per-customer generation

# A raw event: (time_s, customer_index, local_seq, topic_kind, type, properties)
_Raw = tuple[int, int, int, str, str, dict[str, Any]]


class _Customer:
    __slots__ = (
        "by_price",
        "cid",
        "clock",
        "events",
        "existing",
        "idx",
        "p",
        "preferred",
        "products",
        "rng",
        "scale",
        "seed",
        "seq",
    )

    def __init__(
        self,
        idx: int,
        seed: int,
        persona: _Persona,
        clock: _Clock,
        products: list[_Product],
        by_price: list[_Product],
        scale: float,
        preferred: list[_Product] | None = None,
    ) -> None:
        self.idx = idx
        self.preferred = preferred
        self.cid = customer_id_for(idx)
        self.seed = seed
        self.p = persona
        self.clock = clock
        self.products = products
        self.by_price = by_price
        self.scale = scale
        self.rng = random.Random(f"segmentflow/{seed}/customer/{idx}")
        self.events: list[_Raw] = []
        self.seq = 0
        self.existing = False

    def emit(self, t: float, kind: str, etype: str, props: dict[str, Any]) -> None:
        ts = int(t)
        if self.clock.start_s <= ts < self.clock.end_s:
            self.events.append((ts, self.idx, self.seq, kind, etype, props))
            self.seq += 1

    def _time_of_day(self, day_t: float) -> float:
        # Place an event on the calendar day of day_t (days since base) at a typical hour.
        rng = self.rng
        hour = bisect.bisect_right(_HOUR_CUM, rng.random() * _HOUR_CUM[-1])
        return self.clock.base_s + int(day_t) * _DAY + hour * 3600 + rng.random() * 3600

    def _pick_product(self) -> _Product:
        rng = self.rng
        if self.preferred is not None and rng.random() < PREFERENCE_AFFINITY:
            return self.preferred[int(rng.random() * len(self.preferred))]
        n = len(self.by_price)
        if self.p.tier == "low":
            return self.by_price[int(rng.random() * n * 0.35)]
        if self.p.tier == "high":
            return self.by_price[n - 1 - int(rng.random() * n * 0.45)]
        return self.products[int(rng.random() * n)]

    def _gap(self) -> float:
        return 2.0 + self.rng.expovariate(1.0 / 40.0)

    # ---- website sessions ------------------------------------------------------------------

    def session(self, t: float, landing: str | None = None, identify: bool = False) -> float:
        """A browsing session from time t (epoch seconds); returns its end time."""
        rng, p = self.rng, self.p
        props: dict[str, Any] = {"url": landing or _SITE + rng.choice(_PAGES)}
        if landing is not None:
            props["referrer"] = "email"
        elif rng.random() < 0.6:
            props["referrer"] = rng.choice(_REFERRERS)
        self.emit(t, "website", "page_view", props)
        if identify:
            t += self._gap()
            self.identify(t)
        cart: list[_Product] = []
        steps = int(rng.expovariate(1.0 / p.session_steps)) + 1
        w_page, w_prod, _ = p.step_weights
        for _ in range(steps):
            t += self._gap()
            r = rng.random()
            if r < w_page:
                path = (
                    f"/c/{rng.choice(_CATEGORIES)[0]}" if rng.random() < 0.6 else rng.choice(_PAGES)
                )
                self.emit(t, "website", "page_view", {"url": _SITE + path})
            elif r < w_page + w_prod:
                prod = self._pick_product()
                self.emit(
                    t,
                    "website",
                    "product_view",
                    {"product_id": prod.product_id, "category": prod.category, "price": prod.price},
                )
                if rng.random() < p.cart_p:
                    t += self._gap()
                    qty = 1 if p.qty_max == 1 else rng.randint(1, p.qty_max)
                    self.emit(
                        t,
                        "website",
                        "add_to_cart",
                        {"product_id": prod.product_id, "quantity": qty, "price": prod.price},
                    )
                    cart.append(prod)
                    if rng.random() < p.remove_p:
                        t += self._gap()
                        gone = cart.pop(int(rng.random() * len(cart)))
                        self.emit(t, "website", "remove_from_cart", {"product_id": gone.product_id})
            else:
                category = rng.choice(_CATEGORIES)[0]
                self.emit(t, "website", "search", {"query": rng.choice(_SEARCH_WORDS[category])})
        if cart and rng.random() < p.checkout_p:
            t += self._gap()
            value = round(sum(prod.price for prod in cart), 2)
            self.emit(t, "website", "checkout_started", {"cart_value": value})
        return t

    def identify(self, t: float, upgrade: bool = False) -> None:
        rng, p = self.rng, self.p
        first = rng.choice(_FIRST)
        last = rng.choice(_LAST)
        r = rng.random()
        country, cities = _COUNTRIES[-1][0], _COUNTRIES[-1][2]
        for code, weight, options in _COUNTRIES:
            r -= weight
            if r < 0:
                country, cities = code, options
                break
        plan = rng.choices(_PLANS, weights=p.plans)[0]
        vip = rng.random() < p.vip_p
        if upgrade:
            plan, vip = "premium", True
        if self.existing:
            signup = int(t) - rng.randint(30, 900) * _DAY - rng.randint(0, _DAY)
        else:
            signup = int(t)
        traits: dict[str, Any] = {
            "email": f"{first}.{last}{self.idx}@example.com",
            "country": country,
            "city": rng.choice(cities),
            "age": max(18, min(85, round(rng.gauss(p.age_mean, 11.0)))),
            "gender": rng.choices(_GENDERS, weights=_GENDER_W)[0],
            "signup_at": datetime.fromtimestamp(signup, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "plan": plan,
            "vip": vip,
        }
        if upgrade:
            traits = {"plan": plan, "vip": vip}
        self.emit(t, "website", "identify", {"traits": traits})

    def order(self, t: float, k: int) -> None:
        """A purchase session: views, cart adds, checkout, order (maybe refunded later)."""
        rng, p = self.rng, self.p
        n_items = max(1, min(8, round(rng.expovariate(1.0 / p.items_mean) + 0.5)))
        self.emit(t, "website", "page_view", {"url": _SITE + "/"})
        items: list[dict[str, Any]] = []
        seen: set[str] = set()
        for _ in range(n_items):
            prod = self._pick_product()
            if prod.product_id in seen:
                continue
            seen.add(prod.product_id)
            qty = 1 if p.qty_max == 1 or rng.random() < 0.6 else rng.randint(1, p.qty_max)
            if rng.random() < 0.5:  # otherwise re-ordered straight from the account page
                t += self._gap()
                self.emit(
                    t,
                    "website",
                    "product_view",
                    {"product_id": prod.product_id, "category": prod.category, "price": prod.price},
                )
            t += self._gap()
            self.emit(
                t,
                "website",
                "add_to_cart",
                {"product_id": prod.product_id, "quantity": qty, "price": prod.price},
            )
            items.append(
                {
                    "product_id": prod.product_id,
                    "category": prod.category,
                    "quantity": qty,
                    "price": prod.price,
                }
            )
        revenue = round(sum(i["price"] * i["quantity"] for i in items), 2)
        t += self._gap()
        self.emit(t, "website", "checkout_started", {"cart_value": revenue})
        t += 30 + rng.random() * 240
        order_id = f"o-{self.seed}-{self.idx}-{k}"
        self.emit(
            t,
            "purchase",
            "order_completed",
            {"order_id": order_id, "revenue": revenue, "currency": "EUR", "items": items},
        )
        if rng.random() < p.refund_p:
            if len(items) > 1 and rng.random() < 0.4:
                item = items[int(rng.random() * len(items))]
                amount = round(item["price"] * item["quantity"], 2)
            else:
                amount = revenue
            t_ref = t + rng.uniform(2, 20) * _DAY
            self.emit(t_ref, "purchase", "order_refunded", {"order_id": order_id, "amount": amount})

    def _renewal(
        self, rate: float, shape: float, t0: float, t1: float, inten: _Intensity
    ) -> list[float]:
        """Event days in [t0, t1) (days since base) of a seasonal gamma renewal process."""
        if rate <= 0 or t1 <= t0:
            return []
        rng = self.rng
        mean = 1.0 / rate
        u = inten.integral(t0) + rng.random() * mean  # stationary-ish first event
        out: list[float] = []
        while True:
            t = inten.inverse(u)
            if t >= t1:
                return out
            out.append(t)
            u += rng.gammavariate(shape, mean / shape)

    def run(self, campaigns: Sequence[tuple[int, str]]) -> list[_Raw]:
        rng, p, clock = self.rng, self.p, self.clock
        span = (clock.end_s - clock.start_s) / _DAY
        day0 = (clock.start_s - clock.base_s) / _DAY
        self.existing = rng.random() < p.existing_p
        if self.existing:
            first_day = day0 + rng.random() * min(span, 7.0)
        else:
            first_day = day0 + rng.random() * span * p.new_until
        end_day = day0 + span
        if p.burst_days is not None:
            end_day = min(end_day, first_day + rng.uniform(*p.burst_days))
        first_t = max(float(clock.start_s), self._time_of_day(first_day))
        # First visit: landing page + identify (+ the only order for one-time buyers).
        t_end = self.session(first_t, identify=True)
        k = 0
        if p.one_order:
            self.order(t_end + rng.uniform(60, 900), k)
            k += 1
        elif p.burst_days is not None:
            # Dormant customers buy during their burst at least once.
            self.order(t_end + rng.uniform(60, 900), k)
            k += 1
        act_from = first_day + 0.2
        scale = self.scale
        for d in self._renewal(p.browse_rate * scale, 1.0, act_from, end_day, clock.sessions):
            self.session(self._time_of_day(d))
        if not p.one_order:
            for d in self._renewal(
                p.order_rate * scale, p.order_shape, act_from, end_day, clock.orders
            ):
                self.order(self._time_of_day(d), k)
                k += 1
        if p.vip_p >= 0.5 and rng.random() < 0.2:
            self.identify(self._time_of_day(rng.uniform(first_day, day0 + span)), upgrade=True)
        known_t = float(clock.start_s) if self.existing else first_t
        self.emails(campaigns, known_t, clock.base_s + end_day * _DAY)
        return self.events

    # ---- email -----------------------------------------------------------------------------

    def emails(
        self, campaigns: Sequence[tuple[int, str]], known_t: float, engaged_until: float
    ) -> None:
        rng, p = self.rng, self.p
        audience = min(1.0, p.audience * self.scale)
        bad_address = rng.random() < 0.015
        for ct, campaign in campaigns:
            if ct < known_t or rng.random() >= audience:
                continue
            c = {"campaign_id": campaign}
            t = ct + rng.random() * 1800
            self.emit(t, "email", "email_sent", c)
            t += 1 + rng.random() * 30
            if bad_address:
                self.emit(t, "email", "email_bounced", {**c, "bounce_type": "hard"})
                return
            if rng.random() < 0.02:
                self.emit(t, "email", "email_bounced", {**c, "bounce_type": "soft"})
                continue
            self.emit(t, "email", "email_delivered", c)
            if t < engaged_until and rng.random() < p.open_p:
                t += min(3 * _DAY, rng.expovariate(1.0 / 10_800))
                self.emit(t, "email", "email_opened", c)
                if rng.random() < p.click_p:
                    t += 5 + rng.expovariate(1.0 / 90)
                    url = f"{_SITE}/promo/{campaign}"
                    self.emit(t, "email", "email_clicked", {**c, "url": url})
                    if rng.random() < p.click_session_p:
                        self.session(t + 3 + rng.random() * 20, landing=url)
                if rng.random() < 0.0005:
                    self.emit(t + 60 + rng.random() * 600, "email", "email_complained", c)
                    return
            if rng.random() < 0.003:
                self.emit(t + 60 + rng.random() * 3600, "email", "email_unsubscribed", c)
                return


def _campaigns(seed: int, clock: _Clock) -> list[tuple[int, str]]:
    """Campaign send times (Tuesdays and Fridays, plus Black Friday week) and ids."""
    rng = random.Random(f"segmentflow/{seed}/campaigns")
    out = []
    for d in range(clock.n_days):
        day = datetime.fromtimestamp(clock.base_s + d * _DAY, UTC)
        wd = day.weekday()
        black_friday_week = day.month == 11 and 20 <= day.day <= 30
        if wd in (1, 4) or (black_friday_week and wd in (0, 3, 5)):
            t = clock.base_s + d * _DAY + 8 * 3600 + rng.randint(0, 3 * 3600)
            if clock.start_s <= t < clock.end_s:
                out.append((t, f"cmp-{day:%Y%m%d}"))
    return out


# --------------------------------------------------------------------------------------------
# bad messages


def _dumps(obj: Any) -> bytes:
    return orjson.dumps(obj)


def _bad_message(
    kind: str, n: int, seed: int, good: GeneratedMessage, other_cid: str
) -> GeneratedMessage:
    """Build a malformed message of ``kind`` modelled on the valid message ``good``."""
    assert good.event is not None
    ev = good.event
    cid = ev["customer_id"]
    key: bytes | None = cid.encode()
    topic = good.topic_kind
    base = {**ev, "event_id": f"e-{seed}-bad-{n}"}
    value: bytes
    if kind == "invalid_json":
        value = b'{"event_id": "e-' + str(n).encode() + b'", "customer_id": ' + cid.encode() + b"}"
    elif kind == "truncated_json":
        full = _dumps(base)
        value = full[: max(1, len(full) // 2)]
    elif kind == "invalid_utf8":
        value = _dumps({**base, "note": "__BAD__"}).replace(b"__BAD__", b"caf\xc3\x28\xff")
    elif kind == "not_an_object":
        value = _dumps([base]) if n % 2 else b'"page_view"'
    elif kind == "missing_field":
        dropped = ("event_id", "type", "timestamp", "customer_id")[n % 4]
        value = _dumps({k: v for k, v in base.items() if k != dropped})
    elif kind == "numeric_customer_id":
        number = int(cid[2:])
        key = str(number).encode()
        value = _dumps({**base, "customer_id": number})
    elif kind == "numeric_event_id":
        value = _dumps({**base, "event_id": 900_000_000 + n})
    elif kind == "string_quantity":
        topic = "website"
        props = {"product_id": "p-0001", "quantity": "two", "price": 9.99}
        value = _dumps({**base, "type": "add_to_cart", "properties": props})
    elif kind == "naive_timestamp":
        value = _dumps({**base, "timestamp": ev["timestamp"].rstrip("Z")})
    elif kind == "bad_timestamp":
        value = _dumps({**base, "timestamp": "yesterday at noon"})
    elif kind == "timestamp_year_2200":
        value = _dumps({**base, "timestamp": "2200" + ev["timestamp"][4:]})
    elif kind == "negative_revenue":
        topic = "purchase"
        props = {"order_id": f"o-{seed}-bad-{n}", "revenue": -12.5, "currency": "EUR"}
        value = _dumps({**base, "type": "order_completed", "properties": props})
    elif kind == "unknown_type":
        value = _dumps({**base, "type": "page_viewed", "properties": {"url": _SITE + "/"}})
    elif kind == "wrong_topic":
        topic = "purchase"
        value = _dumps({**base, "type": "page_view", "properties": {"url": _SITE + "/sale"}})
    elif kind == "missing_key":
        key = None
        value = _dumps(base)
    elif kind == "key_mismatch":
        key = other_cid.encode()
        value = _dumps(base)
    elif kind == "oversized":
        topic = "website"
        props = {"url": f"{_SITE}/search?q=" + "x" * 70_000}
        value = _dumps({**base, "type": "page_view", "properties": props})
    else:  # pragma: no cover - guarded by BAD_KINDS
        raise ValueError(kind)
    return GeneratedMessage(
        topic, key, value, None, expected_reason=BAD_KINDS[kind], bad_kind=kind, at_us=good.at_us
    )


# --------------------------------------------------------------------------------------------
# public API


def generate(
    customers: int,
    seed: int,
    start: datetime,
    days: int,
    bad_ratio: float = 0.0,
    *,
    mix: Mapping[str, float] | None = None,
    scale: float = 1.0,
    duplicate_ratio: float | None = None,
    preferences: bool = False,
) -> list[GeneratedMessage]:
    """Generate a deterministic, realistic stream of customer events over the three topics.

    Parameters
    ----------
    customers : int
        Number of customers; ids are ``c-00001`` .. (see :func:`customer_id_for`).
    seed : int
        Random seed. The same arguments always give byte-identical messages.
    start : datetime
        Start of the event-time window (a naive datetime is taken as UTC).
    days : int
        Length of the window in days; every event falls in ``[start, start + days)``.
    bad_ratio : float, default 0.0
        Share (0 <= bad_ratio < 1) of *all* returned messages that are malformed, spread over
        the kinds of :data:`BAD_KINDS` (each kind appears once there are enough bad messages).
        Bad messages have ``event=None`` and an ``expected_reason``.
    mix : mapping of str to float, optional
        Archetype weights (keys from :data:`ARCHETYPES`; missing ones weigh 0). Default
        :data:`DEFAULT_MIX`. Use :func:`manifest` / :func:`archetype_of` for the ground truth.
    scale : float, default 1.0
        Multiplies browsing-session and order rates and campaign reach: about 110 events per
        customer over 180 days at 1.0 with the default mix.
    duplicate_ratio : float, optional
        Share of valid events re-sent as exact duplicates (``duplicate=True``, placed right after
        the original). Default: ``bad_ratio / 5``.
    preferences : bool, default False
        Give each customer a preferred category (:func:`preference_of`, drawn from its
        archetype's :data:`PREFERENCES`) from which :data:`PREFERENCE_AFFINITY` of its product
        picks come. Off by default: the output is then the same as without the option.

    Returns
    -------
    list of GeneratedMessage
        Sorted by event time (``at_us``); ties ordered by customer and generation order.
        Valid events have ``event_id`` ``e-<seed>-<n>`` with n the position among valid events.

    Examples
    --------
    >>> from datetime import datetime, timezone
    >>> start = datetime(2025, 10, 1, tzinfo=timezone.utc)
    >>> msgs = generate(customers=20, seed=7, start=start, days=60, bad_ratio=0.05)
    >>> msgs == generate(customers=20, seed=7, start=start, days=60, bad_ratio=0.05)
    True
    >>> good = [m for m in msgs if m.valid and not m.duplicate]
    >>> good[0].event["event_id"], good[0].key == good[0].event["customer_id"].encode()
    ('e-7-0', True)
    >>> all(a.at_us <= b.at_us for a, b in zip(msgs, msgs[1:]))
    True
    >>> sorted({m.topic_kind for m in good})
    ['email', 'purchase', 'website']
    """
    if customers < 0:
        raise ValueError("customers must be >= 0")
    if days <= 0:
        raise ValueError("days must be > 0")
    if not 0.0 <= bad_ratio < 1.0:
        raise ValueError("bad_ratio must be in [0, 1)")
    if not scale > 0 or not math.isfinite(scale):
        raise ValueError("scale must be a finite number > 0")
    dup_ratio = bad_ratio / 5 if duplicate_ratio is None else duplicate_ratio
    if not 0.0 <= dup_ratio <= 1.0:
        raise ValueError("duplicate_ratio must be in [0, 1]")
    cum = _normalised_mix(mix)
    clock = _make_clock(start, days)
    products, by_price = _catalogue(seed)
    campaigns = _campaigns(seed, clock)

    # Millions of short-lived containers: pausing the cyclic GC (nothing here makes cycles)
    # roughly halves the run time when the caller already holds a large heap.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        raws: list[_Raw] = []
        for idx in range(1, customers + 1):
            archetype = _archetype(idx, seed, cum)
            persona = _PERSONAS[archetype]
            liked = None
            if preferences:
                cid = customer_id_for(idx)
                choice = random.Random(f"segmentflow/{seed}/preference/{cid}").choice(
                    PREFERENCES[archetype]
                )
                liked = [prod for prod in products if prod.category == choice]
            cust = _Customer(idx, seed, persona, clock, products, by_price, scale, liked)
            raws.extend(cust.run(campaigns))
        raws.sort()  # (time, customer, seq) is unique, so properties are never compared
        messages = _encode(raws, seed, clock)
        if messages and (bad_ratio > 0.0 or dup_ratio > 0.0):
            messages = _sprinkle(messages, seed, bad_ratio, dup_ratio, customers)
        return messages
    finally:
        if gc_was_enabled:
            gc.enable()


def _encode(raws: list[_Raw], seed: int, clock: _Clock) -> list[GeneratedMessage]:
    """Turn sorted raw events into messages: ids in stream order, RFC 3339 times, JSON bytes."""
    cids: dict[int, tuple[str, bytes]] = {}
    base_s, day_str = clock.base_s, clock.day_str
    dumps = orjson.dumps
    prefix = f"e-{seed}-"
    messages: list[GeneratedMessage] = []
    append = messages.append
    last_ts = -1
    stamp = ""
    for n, (ts, idx, _, kind, etype, props) in enumerate(raws):
        ck = cids.get(idx)
        if ck is None:
            cid = customer_id_for(idx)
            ck = cids[idx] = (cid, cid.encode())
        if ts != last_ts:
            d, r = divmod(ts - base_s, _DAY)
            minute, sec = divmod(r, 60)
            stamp = day_str[d] + _HHMM[minute] + _SS[sec]
            last_ts = ts
        event = {
            "event_id": prefix + str(n),
            "customer_id": ck[0],
            "type": etype,
            "timestamp": stamp,
            "properties": props,
        }
        append(GeneratedMessage(kind, ck[1], dumps(event), event, None, None, False, ts * _US))
    return messages


def _sprinkle(
    messages: list[GeneratedMessage], seed: int, bad_ratio: float, dup_ratio: float, customers: int
) -> list[GeneratedMessage]:
    rng = random.Random(f"segmentflow/{seed}/bad")
    n_valid = len(messages)
    n_bad = round(bad_ratio * n_valid / (1.0 - bad_ratio))
    n_dup = round(dup_ratio * n_valid)
    after: dict[int, list[GeneratedMessage]] = {}
    kinds = list(BAD_KINDS)
    order: list[str] = []
    for n in range(n_bad):
        if n % len(kinds) == 0:
            rng.shuffle(kinds)
            order = list(kinds)
        pos = rng.randrange(n_valid)
        other = customer_id_for(rng.randint(1, max(customers, 2)))
        if other.encode() == messages[pos].key:
            other = other + "-x"
        after.setdefault(pos, []).append(
            _bad_message(order[n % len(kinds)], n, seed, messages[pos], other)
        )
    for _ in range(n_dup):
        pos = rng.randrange(n_valid)
        m = messages[pos]
        dup = GeneratedMessage(m.topic_kind, m.key, m.value, m.event, duplicate=True, at_us=m.at_us)
        after.setdefault(pos, []).insert(0, dup)
    out: list[GeneratedMessage] = []
    for i, m in enumerate(messages):
        out.append(m)
        extra = after.get(i)
        if extra:
            out.extend(extra)
    return out


def to_jsonl_lines(
    messages: Iterable[GeneratedMessage], include_duplicates: bool = False
) -> list[str]:
    """Valid events as JSON lines (no trailing newline), sorted by event time.

    Parameters
    ----------
    messages : iterable of GeneratedMessage
        Output of :func:`generate`; bad messages are skipped.
    include_duplicates : bool, default False
        Keep the exact re-sends (``duplicate=True``) too.

    Returns
    -------
    list of str
        One compact JSON object per element, the ``segmentflow replay`` input format.
    """
    kept = [m for m in messages if m.event is not None and (include_duplicates or not m.duplicate)]
    kept.sort(key=lambda m: m.at_us)  # stable: keeps the generator's tie order
    return [m.value.decode("utf-8") for m in kept]


def write_jsonl(
    messages: Iterable[GeneratedMessage], path: str | Path, include_duplicates: bool = False
) -> int:
    """Write the valid events to ``path`` as JSON lines (see :func:`to_jsonl_lines`).

    Returns
    -------
    int
        Number of lines written.
    """
    lines = to_jsonl_lines(messages, include_duplicates)
    with Path(path).open("w", encoding="utf-8", newline="\n") as fh:
        for line in lines:
            fh.write(line)
            fh.write("\n")
    return len(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m segmentflow.synthetic``: write a synthetic JSONL file (and a manifest)."""
    ap = argparse.ArgumentParser(prog="python -m segmentflow.synthetic", description=__doc__)
    ap.add_argument("out", help="output JSONL file of valid events")
    ap.add_argument("--customers", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--start", default="2025-09-01T00:00:00Z")
    ap.add_argument("--days", type=int, default=180)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--manifest", help="also write {customer_id: archetype} JSON here")
    args = ap.parse_args(argv)
    start = datetime.fromisoformat(args.start.replace("Z", "+00:00"))
    msgs = generate(args.customers, args.seed, start, args.days, scale=args.scale)
    n = write_jsonl(msgs, args.out)
    if args.manifest:
        Path(args.manifest).write_bytes(
            orjson.dumps(manifest(args.customers, args.seed), option=orjson.OPT_INDENT_2)
        )
    print(f"wrote {n} events for {args.customers} customers to {args.out}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
