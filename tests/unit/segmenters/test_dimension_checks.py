"""The shared check suite (segmenters/checks.py) over every built-in dimension and the worked
example of docs/dimensions.md (docs/examples/churn_risk.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from segmentflow.segmenters.checks import Case, Check, builtin_case, checks_for, synthetic_events
from segmentflow.segmenters.registry import REGISTRY

EXAMPLES = Path(__file__).resolve().parents[3] / "docs" / "examples"
EVENTS = synthetic_events()


def churn_case() -> Case:
    """The worked example, with a rule that reads its variables."""
    if str(EXAMPLES) not in sys.path:
        sys.path.insert(0, str(EXAMPLES))
    config = {
        "persona": {"enabled": False},
        "dimensions": [{"class": "churn_risk:ChurnRisk", "medium_days": 10, "high_days": 25}],
        "rules": [{"name": "winback", "when": 'churn_risk == "high" && days_inactive < 40'}],
    }
    base = builtin_case("lifecycle", EVENTS)
    return Case("churn_risk", config, EVENTS, base.until, (str(EXAMPLES),))


CASES = [builtin_case(kind, EVENTS) for kind in sorted(REGISTRY)] + [churn_case()]


@pytest.mark.parametrize("check", [c for case in CASES for c in checks_for(case)], ids=str)
def test_dimension_passes_check(check: Check, tmp_path: Path) -> None:
    check(tmp_path)


def test_every_registered_dimension_has_a_case() -> None:
    assert {case.kind for case in CASES} >= set(REGISTRY)
