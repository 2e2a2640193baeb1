"""The dashboard's pure model (no browser, no broker): metrics parsing, flows, rates, history."""

from __future__ import annotations

from typing import Any

from segmentflow.dashboard.state import (
    FIRST,
    DashboardState,
    WorkerSample,
    parse_metrics,
    stage_order,
)

METRICS = """\
# HELP segmentflow_events_received_total Input messages read
# TYPE segmentflow_events_received_total counter
segmentflow_events_received_total{topic="website-events"} 90.0
segmentflow_events_received_total{topic="purchase-events"} 10.0
# TYPE segmentflow_events_deadlettered_total counter
segmentflow_events_deadlettered_total{topic="website-events"} 3.0
# TYPE segmentflow_deadletter_reasons_total counter
segmentflow_deadletter_reasons_total{reason="invalid_json"} 2.0
segmentflow_deadletter_reasons_total{reason="oversized"} 1.0
"""


def change(
    customer: str, dim: str, previous: str | None, current: str, seq: int = 1
) -> dict[str, Any]:
    return {
        "id": f"{customer}/{dim}/{seq}",
        "time": "2026-01-01T00:00:00Z",
        "data": {
            "customer_id": customer,
            "dimension": dim,
            "previous": previous,
            "current": current,
            "cause": {"kind": "event", "event_id": "e1"},
        },
    }


def test_parse_metrics_sums_topics_and_reasons() -> None:
    assert parse_metrics(METRICS) == (100.0, 3.0, {"invalid_json": 2.0, "oversized": 1.0})
    assert parse_metrics("") == (0.0, 0.0, {})


def test_flows_balance_and_rates() -> None:
    state = DashboardState(window_s=600)
    t = 1_000_000.0
    state.add_change(change("a", "lifecycle", None, "prospect"), t)
    state.add_change(change("a", "lifecycle", "prospect", "new", 2), t + 1)
    state.add_change(change("b", "lifecycle", None, "new"), t + 2)
    state.add_change(change("b", "rfm", None, "champions"), t + 2)
    snap = state.snapshot(t + 3)
    flows = {(f["from"], f["to"]): f["count"] for f in snap["flows"]}
    assert flows == {(FIRST, "prospect"): 1, ("prospect", "new"): 1, (FIRST, "new"): 1}
    assert snap["stages"] == [FIRST, "prospect", "new"]
    assert snap["changes_seen"] == 4
    assert snap["changes_by_dimension"] == {"lifecycle": 3, "rfm": 1}
    assert snap["recent"][0]["dimension"] == "rfm"  # newest first
    assert snap["lifecycle_per_min"] == 3
    assert sum(row["total"] for row in snap["per_minute"]) == 3
    assert len(snap["per_minute"]) == 30
    # outside the window, flows expire
    later = state.snapshot(t + 603)
    assert later["flows"] == []


def test_history_and_worker_deadletter_rate() -> None:
    state = DashboardState()
    t = 2_000_000.0
    for i, (dead, pops) in enumerate([(0, {"new": 1}), (6, {"new": 2}), (12, {"active": 2})]):
        state.add_sample(
            WorkerSample(t + 30 * i, {"lifecycle": pops}, received=100.0 * i, deadlettered=dead)
        )
    snap = state.snapshot(t + 60)
    assert snap["history"]["t"] == [t, t + 30, t + 60]
    assert snap["history"]["series"]["lifecycle"] == {"active": [0, 0, 2], "new": [1, 2, 0]}
    assert snap["populations"] == {"lifecycle": {"active": 2}}
    assert snap["customers"] == 2
    worker = snap["deadletters"]["worker"]
    assert worker["per_min"] == 12.0  # 12 dead letters over the last 60 s
    assert worker["total"] == 12 and worker["received"] == 200
    state.worker_failed("boom")
    assert state.snapshot(t + 61)["worker"] == {"ok": False, "error": "boom"}


def test_trigger_deadletters_and_stage_order() -> None:
    state = DashboardState()
    t = 3_000_000.0
    for i in range(3):
        state.add_trigger_deadletter({"target": "crm"}, t + i)
    state.add_trigger_deadletter({"target": "other"}, t - 300)
    triggers = state.snapshot(t + 5)["deadletters"]["triggers"]
    assert triggers["total"] == 4 and triggers["per_min"] == 3
    assert triggers["by_target"] == {"crm": 3, "other": 1}
    assert stage_order({"churned", "zeta", "new", FIRST, "alpha"}) == [
        FIRST,
        "new",
        "churned",
        "alpha",
        "zeta",
    ]
