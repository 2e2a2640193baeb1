"""Lifecycle stages as pure functions of time (CONTRACT §3 "Default lifecycle")."""

from __future__ import annotations

import pytest

from segmentflow.config import LifecycleConfig
from segmentflow.engine.state import CustomerState
from segmentflow.segmenters.lifecycle import (
    ACTIVE,
    AT_RISK,
    CHURNED,
    NEW,
    PROSPECT,
    REACTIVATED,
    next_threshold,
    reason,
    record_order,
    stage_at,
)

DAY = 86_400_000_000
T0 = 20_000 * DAY + 10 * 3_600_000_000  # some day, 10:00 UTC
CFG = LifecycleConfig()


def ordered(first: int, last: int | None = None, reactivated: int | None = None) -> CustomerState:
    return CustomerState(
        "c",
        first_order=first,
        last_order=first if last is None else last,
        reactivated_at=reactivated,
    )


def test_prospect_without_orders() -> None:
    state = CustomerState("c", first_seen=T0, last_seen=T0)
    assert stage_at(state, T0, CFG) == PROSPECT
    assert stage_at(state, T0 + 1000 * DAY, CFG) == PROSPECT
    assert next_threshold(state, T0, CFG) is None


@pytest.mark.parametrize(
    ("offset", "stage"),
    [
        (0, NEW),
        (30 * DAY - 1, NEW),
        (30 * DAY, ACTIVE),  # new until first + 30d (exclusive)
        (90 * DAY - 1, ACTIVE),
        (90 * DAY, AT_RISK),  # 90d <= since_last_order
        (180 * DAY - 1, AT_RISK),
        (180 * DAY, CHURNED),  # since_last_order >= 180d
        (5000 * DAY, CHURNED),
    ],
)
def test_single_order_boundaries(offset: int, stage: str) -> None:
    assert stage_at(ordered(T0), T0 + offset, CFG) == stage


def test_active_measured_from_last_order() -> None:
    state = ordered(T0, T0 + 50 * DAY)
    assert stage_at(state, T0 + 50 * DAY + 90 * DAY - 1, CFG) == ACTIVE
    assert stage_at(state, T0 + 50 * DAY + 90 * DAY, CFG) == AT_RISK
    assert stage_at(state, T0 + 50 * DAY + 180 * DAY, CFG) == CHURNED


def test_new_wins_over_recent_orders_until_first_plus_30d() -> None:
    state = ordered(T0, T0 + 20 * DAY)
    assert stage_at(state, T0 + 29 * DAY, CFG) == NEW
    assert stage_at(state, T0 + 30 * DAY, CFG) == ACTIVE


@pytest.mark.parametrize(
    ("offset", "stage"),
    [(0, REACTIVATED), (30 * DAY - 1, REACTIVATED), (30 * DAY, ACTIVE), (90 * DAY, AT_RISK)],
)
def test_reactivated_window(offset: int, stage: str) -> None:
    back = T0 + 200 * DAY
    state = ordered(T0, back, reactivated=back)
    assert stage_at(state, back + offset, CFG) == stage


def test_durations_are_exact_microseconds() -> None:
    cfg = LifecycleConfig(new_days=0.5, reactivated_days=0.25, at_risk_days=1, churned_days=2.5)
    state = ordered(T0)
    half = 12 * 3_600_000_000
    assert stage_at(state, T0 + half - 1, cfg) == NEW
    assert stage_at(state, T0 + half, cfg) == ACTIVE
    assert stage_at(state, T0 + DAY, cfg) == AT_RISK
    assert stage_at(state, T0 + 2 * DAY + half - 1, cfg) == AT_RISK
    assert stage_at(state, T0 + 2 * DAY + half, cfg) == CHURNED
    assert next_threshold(state, T0, cfg) == T0 + half


def test_next_threshold_is_strictly_after() -> None:
    state = ordered(T0)
    assert next_threshold(state, T0, CFG) == T0 + 30 * DAY
    assert next_threshold(state, T0 + 30 * DAY - 1, CFG) == T0 + 30 * DAY
    assert next_threshold(state, T0 + 30 * DAY, CFG) == T0 + 90 * DAY
    assert next_threshold(state, T0 + 90 * DAY, CFG) == T0 + 180 * DAY
    assert next_threshold(state, T0 + 180 * DAY, CFG) is None


def test_next_threshold_includes_reactivation_end() -> None:
    back = T0 + 200 * DAY
    state = ordered(T0, back, reactivated=back)
    assert next_threshold(state, back, CFG) == back + 30 * DAY
    assert next_threshold(state, back + 30 * DAY, CFG) == back + 90 * DAY


def test_every_stage_change_happens_at_a_threshold() -> None:
    """Walking thresholds finds every change of stage_at (checked hour by hour)."""
    back = T0 + 200 * DAY
    state = ordered(T0, back, reactivated=back)
    moments = {T0}
    t: int | None = T0
    while t is not None:
        t = next_threshold(state, t, CFG)
        if t is not None:
            moments.add(t)
    hour = 3_600_000_000
    previous = stage_at(state, T0, CFG)
    for t in range(T0, back + 400 * DAY, hour):
        now = stage_at(state, t, CFG)
        if now != previous:
            assert t in moments, (t - T0) / DAY
        previous = now


@pytest.mark.parametrize(
    ("gap_days", "stage"),
    [(10, NEW), (60, ACTIVE), (89, ACTIVE), (90, REACTIVATED), (179, REACTIVATED)],
)
def test_record_order_reactivates_only_from_lapsed(gap_days: int, stage: str) -> None:
    state = ordered(T0)
    ts = T0 + gap_days * DAY
    record_order(state, ts, ts, CFG)
    assert state.first_order == T0 and state.last_order == ts
    assert state.reactivated_at == (ts if stage == REACTIVATED else None)
    assert stage_at(state, ts, CFG) == stage


def test_record_order_from_churned() -> None:
    state = ordered(T0)
    ts = T0 + 400 * DAY
    record_order(state, ts, ts, CFG)
    assert state.reactivated_at == ts
    assert stage_at(state, ts, CFG) == REACTIVATED


def test_later_orders_do_not_extend_reactivation() -> None:
    state = ordered(T0)
    back = T0 + 200 * DAY
    record_order(state, back, back, CFG)
    record_order(state, back + 10 * DAY, back + 10 * DAY, CFG)
    assert state.reactivated_at == back
    assert stage_at(state, back + 30 * DAY - 1, CFG) == REACTIVATED
    assert stage_at(state, back + 30 * DAY, CFG) == ACTIVE


def test_first_order_of_a_prospect_is_not_a_reactivation() -> None:
    state = CustomerState("c", first_seen=T0)
    record_order(state, T0 + 500 * DAY, T0 + 500 * DAY, CFG)
    assert state.reactivated_at is None
    assert stage_at(state, T0 + 500 * DAY, CFG) == NEW


def test_late_order_keeps_first_and_last_ordered() -> None:
    state = ordered(T0 + 10 * DAY)
    record_order(state, T0, T0 + 10 * DAY, CFG)  # arrives late
    assert (state.first_order, state.last_order) == (T0, T0 + 10 * DAY)


def test_reason_names_rule_and_days() -> None:
    state = ordered(T0)
    why = reason(state, AT_RISK, T0 + 95 * DAY, CFG)
    assert why["days_since_last_order"] == 95
    assert why["rule"] == "90d <= since_last_order < 180d"
    assert reason(CustomerState("c"), PROSPECT, T0, CFG) == {"rule": "events but no order yet"}
