"""The worked example (docs/examples/churn_risk.py) against a brute-force reference written
from its docstring alone (tests/reference.py drives it next to lifecycle and the rules)."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from reference import US_PER_DAY, RefDimension, day, reference_changes

from segmentflow.config import config_from_dict
from segmentflow.segmenters.checks import synthetic_events
from segmentflow.service.replay import replay_events
from segmentflow.state.memory import MemoryStore

EXAMPLES = Path(__file__).resolve().parents[3] / "docs" / "examples"
ACTIVE = {"page_view", "product_view", "add_to_cart", "search", "checkout_started"}
ACTIVE.add("order_completed")


class RefChurn(RefDimension):
    """low / medium / high by the time since the last website or purchase activity."""

    name = "churn_risk"

    def __init__(self, medium_days: int, high_days: int) -> None:
        self.medium, self.high = medium_days * US_PER_DAY, high_days * US_PER_DAY

    def _last(self, applied: list[tuple[int, dict[str, Any]]]) -> int | None:
        return max((ts for ts, e in applied if e["type"] in ACTIVE), default=None)

    def moments(self, evs: list[tuple[int, dict[str, Any]]], until_us: int) -> set[int]:
        return {ts + d for ts, e in evs if e["type"] in ACTIVE for d in (self.medium, self.high)}

    def value_at(self, applied: list[tuple[int, dict[str, Any]]], t: int) -> str | None:
        last = self._last(applied)
        if last is None:
            return None
        idle = t - last
        return "high" if idle >= self.high else "medium" if idle >= self.medium else "low"

    def variables(self, applied: list[tuple[int, dict[str, Any]]], t: int) -> dict[str, Any]:
        last = self._last(applied)
        return {"days_inactive": None if last is None else day(t) - day(last)}


def _view(changes: list[dict[str, Any]]) -> dict[tuple[str, str], list[tuple[Any, ...]]]:
    out: dict[tuple[str, str], list[tuple[Any, ...]]] = {}
    for c in changes:
        d = c["data"]
        row = (d["sequence"], d["previous"], d["current"], c["time"], d["cause"]["kind"])
        out.setdefault((d["customer_id"], d["dimension"]), []).append(row)
    return out


@pytest.mark.parametrize("seed", [5, 11])
def test_churn_risk_matches_the_reference(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(EXAMPLES))
    config = {
        "rfm": {"enabled": False},
        "persona": {"enabled": False},
        "dimensions": [{"class": "churn_risk:ChurnRisk", "medium_days": 9, "high_days": 21}],
        "rules": [
            {"name": "winback", "when": 'churn_risk == "high" && orders >= 1'},
            {"name": "fresh", "when": "days_inactive != null && days_inactive <= 2"},
        ],
    }
    events = synthetic_events(25, 120, seed)
    until = datetime(2026, 9, 1, tzinfo=UTC)
    until_us = int(until.timestamp()) * 1_000_000
    got = replay_events(events, config_from_dict(config), until_us, MemoryStore())
    want = reference_changes(events, config, until, extra=[RefChurn(9, 21)])
    got_view, want_view = _view(got), _view(want)
    assert any(dim == "churn_risk" for _, dim in want_view)
    assert any(rows[-1][4] == "time" for (_, dim), rows in want_view.items() if dim == "churn_risk")
    assert got_view == want_view
