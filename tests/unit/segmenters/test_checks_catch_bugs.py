"""The check suite fails for broken dimensions (so passing it means something)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from segmentflow.segmenters.checks import (
    Case,
    builtin_case,
    check_deterministic_across_processes,
    check_due_at_exact_moment,
    check_restart_equals_uninterrupted,
    check_slice_round_trip,
    synthetic_events,
)

HERE = Path(__file__).resolve().parent
EVENTS = synthetic_events(12, 90)


@pytest.fixture(autouse=True)
def _importable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(HERE))


def case(cls: str, kind: str) -> Case:
    config = {"persona": {"enabled": False}, "dimensions": [{"class": f"dimension_bugs:{cls}"}]}
    until = builtin_case("lifecycle", EVENTS).until
    return Case(kind, config, EVENTS, until, (str(HERE),))


def test_hash_dependent_output_fails_determinism(tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match="PYTHONHASHSEED"):
        check_deterministic_across_processes(case("HashSalted", "hash_salted"), tmp_path)


def test_late_next_due_fails_the_exact_moment_check(tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match="next_due is late"):
        check_due_at_exact_moment(case("LateDue", "late_due"), tmp_path)


@pytest.mark.parametrize(
    "check", [check_due_at_exact_moment, check_slice_round_trip, check_restart_equals_uninterrupted]
)
def test_the_correct_twin_passes(check: Callable[[Case, Path], None], tmp_path: Path) -> None:
    check(case("Idle", "idle"), tmp_path)


def test_lossy_slice_fails_round_trip_and_restart(tmp_path: Path) -> None:
    broken = case("Forgetful", "forgetful")
    with pytest.raises(AssertionError, match=r"round trip|load\(dump\(\)\)"):
        check_slice_round_trip(broken, tmp_path)
    with pytest.raises(AssertionError, match="restarted run differs"):
        check_restart_equals_uninterrupted(broken, tmp_path)
