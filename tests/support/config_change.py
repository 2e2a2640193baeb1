"""An old and a new config for the config-change tests (CONTRACT §6): changed lifecycle
thresholds, an unchanged rule, a changed one, one reading a changed dimension, a new
time-dependent one and a removed one (``browsers``)."""

from __future__ import annotations

from typing import Any

OLD: dict[str, Any] = {
    "persona": {"enabled": False},
    "rules": [
        {"name": "buyer", "when": "orders >= 1"},
        {"name": "big", "when": "revenue >= 300.0"},
        {"name": "browsers", "when": "page_views >= 3"},
        {"name": "lapsing", "when": 'lifecycle == "at_risk"'},
    ],
}
NEW: dict[str, Any] = {
    "persona": {"enabled": False},
    "lifecycle": {"at_risk_days": 40, "churned_days": 120},  # changed thresholds
    "rules": [
        {"name": "buyer", "when": "orders >= 1"},  # unchanged
        {"name": "big", "when": "revenue >= 100.0"},  # changed threshold
        {"name": "lapsing", "when": 'lifecycle == "at_risk"'},  # reads a changed dimension
        {"name": "idle", "when": "days_since_last_seen >= 20"},  # new, time-dependent
    ],  # "browsers" removed
}
