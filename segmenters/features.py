"""The core CEL variables of CONTRACT §6, computed from a customer's state at instant ``t``.

The variables holding a dimension's value (``lifecycle``, ``rfm``, ``r_score``, ...) are
contributed by the dimensions (``Dimension.variables``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from segmentflow.engine.state import (
    FLAG_COMPLAINED,
    FLAG_HARD_BOUNCED,
    FLAG_UNSUBSCRIBED,
    TOTALS,
    WINDOWED,
    CustomerState,
    T,
)

DAY_US = 86_400_000_000
WINDOWS = (7, 30, 90)
Getter = Callable[[CustomerState, int], Any]


def _days_since(attr: str) -> Getter:
    def get(state: CustomerState, today: int) -> int | None:
        moment = getattr(state, attr)
        return None if moment is None else today - moment // DAY_US

    return get


def _total(name: str) -> Getter:
    index = T[name]
    if name == "revenue":
        return lambda s, _today: float(s.totals[index])
    return lambda s, _today: int(s.totals[index])


def _windowed(name: str, n: int) -> Getter:
    if name == "revenue":
        return lambda s, today: float(s.window(name, n, today))
    return lambda s, today: int(s.window(name, n, today))


def _flag(bit: int) -> Getter:
    return lambda s, _today: bool(s.flags & bit)


def _avg_order_value(state: CustomerState, _today: int) -> float | None:
    orders = state.totals[T["orders"]]
    return float(state.totals[T["revenue"]]) / orders if orders else None


GETTERS: dict[str, Getter] = {
    "traits": lambda s, _today: s.traits,
    "avg_order_value": _avg_order_value,
    "email_unsubscribed": _flag(FLAG_UNSUBSCRIBED),
    "email_complained": _flag(FLAG_COMPLAINED),
    "email_hard_bounced": _flag(FLAG_HARD_BOUNCED),
    "days_since_last_order": _days_since("last_order"),
    "days_since_first_order": _days_since("first_order"),
    "days_since_first_seen": _days_since("first_seen"),
    "days_since_last_seen": _days_since("last_seen"),
}
GETTERS.update({name: _total(name) for name in TOTALS})
GETTERS.update({f"{m}_{n}d": _windowed(m, n) for m in WINDOWED for n in WINDOWS})

#: Variables that can change with time alone (so rules using them need midnight evaluation);
#: the dimensions' variables (``lifecycle``, ``r_score``, ...) come from the dimensions.
TIME_DEPENDENT = frozenset(
    {f"{m}_{n}d" for m in WINDOWED for n in WINDOWS}
    | {name for name in GETTERS if name.startswith("days_since_")}
)


#: windowed variable -> (bucket index, window days, is money)
_WINDOWED: dict[str, tuple[int, int, bool]] = {
    f"{m}_{n}d": (i, n, m == "revenue") for i, m in enumerate(WINDOWED) for n in WINDOWS
}


def variables(
    state: CustomerState,
    t: int,
    names: Iterable[str] | None = None,
    getters: Mapping[str, Getter] = GETTERS,
) -> dict[str, Any]:
    """The CEL variables of ``state`` at instant ``t`` (only ``names`` when given), from
    ``getters`` (default: the core §6 variables; the engine adds the dimensions').

    Windowed sums add the day buckets in the same order (and so with the same floating-point
    result) as :meth:`CustomerState.window`.

    Examples
    --------
    >>> from segmentflow.engine.state import CustomerState
    >>> s = CustomerState("c", first_seen=0, last_seen=0)
    >>> variables(s, 3 * DAY_US, ["orders", "days_since_last_seen", "avg_order_value"])
    {'orders': 0, 'days_since_last_seen': 3, 'avg_order_value': None}
    """
    today = t // DAY_US
    wanted = getters.keys() if names is None else names
    out: dict[str, Any] = {}
    windows: list[tuple[str, int, int, bool]] = []
    for name in wanted:
        spec = _WINDOWED.get(name)
        if spec is None:
            out[name] = getters[name](state, today)
        else:
            out[name] = None  # keeps the order of ``names``
            windows.append((name, *spec))
    if windows:
        days = list(state.days.items())
        for name, index, n, money in windows:
            low = today - n
            total = sum([bucket[index] for day, bucket in days if low < day <= today])
            out[name] = float(total) if money else int(total)
    return out
