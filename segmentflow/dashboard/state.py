"""The dashboard's in-memory model (pure; no I/O): population history, lifecycle flows, recent
changes and dead-letter rates, rendered to one JSON document for the page."""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

LIFECYCLE_ORDER = ("prospect", "new", "active", "reactivated", "at_risk", "churned")
FIRST = "(first)"


@dataclass
class WorkerSample:
    """One poll of the worker: populations and dead-letter counters."""

    at: float
    populations: dict[str, dict[str, int]]
    received: float | None = None
    deadlettered: float | None = None
    reasons: dict[str, float] = field(default_factory=dict)
    #: the config re-evaluation's progress (:func:`parse_config_walk`; ``None``: not reported)
    config_walk: dict[str, Any] | None = None


def parse_metrics(text: str) -> tuple[float, float, dict[str, float]]:
    """``(received, deadlettered, per reason)`` totals from the worker's Prometheus text.

    Examples
    --------
    >>> parse_metrics('# TYPE segmentflow_events_received_total counter\\n'
    ...               'segmentflow_events_received_total{topic="a"} 5\\n'
    ...               '# TYPE segmentflow_events_deadlettered_total counter\\n'
    ...               'segmentflow_events_deadlettered_total{topic="a"} 1\\n')
    (5.0, 1.0, {})
    """
    received = deadlettered = 0.0
    reasons: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if not sample.name.endswith("_total"):
                continue
            if family.name == "segmentflow_events_received":
                received += sample.value
            elif family.name == "segmentflow_events_deadlettered":
                deadlettered += sample.value
            elif family.name == "segmentflow_deadletter_reasons":
                reason = sample.labels.get("reason", "?")
                reasons[reason] = reasons.get(reason, 0.0) + sample.value
    return received, deadlettered, reasons


#: the worker's config re-evaluation metrics (CONTRACT §6) -> the dashboard's field names
CONFIG_WALK_METRICS = {
    "segmentflow_config_reevaluation_running": "running",
    "segmentflow_config_reevaluation_pending_shards": "pending_shards",
    "segmentflow_config_reevaluated_customers": "customers",
    "segmentflow_config_reevaluation_changes": "changes",
}


def parse_config_walk(text: str) -> dict[str, Any] | None:
    """The config re-evaluation's progress from the worker's Prometheus text: ``running``,
    ``pending_shards`` (owned shards still on an older config), ``customers`` re-evaluated and
    ``changes`` emitted; ``None`` when the worker does not report it.

    Examples
    --------
    >>> parse_config_walk('# TYPE segmentflow_config_reevaluation_running gauge\\n'
    ...                   'segmentflow_config_reevaluation_running 1.0\\n'
    ...                   '# TYPE segmentflow_config_reevaluation_pending_shards gauge\\n'
    ...                   'segmentflow_config_reevaluation_pending_shards 3.0\\n'
    ...                   '# TYPE segmentflow_config_reevaluated_customers_total counter\\n'
    ...                   'segmentflow_config_reevaluated_customers_total 1500.0\\n')
    {'running': True, 'pending_shards': 3, 'customers': 1500, 'changes': 0}
    >>> parse_config_walk('') is None
    True
    """
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        key = CONFIG_WALK_METRICS.get(family.name.removesuffix("_total"))
        if key is None:
            continue
        for sample in family.samples:
            if sample.name.removesuffix("_total") in CONFIG_WALK_METRICS:
                found[key] = found.get(key, 0.0) + sample.value
    if not found:
        return None
    return {
        "running": bool(found.get("running", 0.0)),
        "pending_shards": int(found.get("pending_shards", 0.0)),
        "customers": int(found.get("customers", 0.0)),
        "changes": int(found.get("changes", 0.0)),
    }


def _minute(at: float) -> int:
    return int(at // 60) * 60


def stage_order(values: set[str]) -> list[str]:
    """Lifecycle stages in lifecycle order, unknown ones after (sorted), ``(first)`` first."""
    known = [v for v in (FIRST, *LIFECYCLE_ORDER) if v in values]
    return known + sorted(values - set(known))


class DashboardState:
    """Everything the page shows, updated by the poller and the Kafka consumer.

    Parameters
    ----------
    history
        Worker samples kept (population history length).
    recent
        Changes kept for the "recent changes" table.
    window_s
        Window of the lifecycle flow chart (seconds).
    """

    def __init__(self, history: int = 1800, recent: int = 50, window_s: float = 900.0) -> None:
        self.samples: deque[WorkerSample] = deque(maxlen=history)
        self.recent: deque[dict[str, Any]] = deque(maxlen=recent)
        self.window_s = window_s
        # (arrival second, previous, current) of lifecycle changes inside the window
        self.flows: deque[tuple[float, str, str]] = deque()
        self.per_minute: Counter[tuple[int, str]] = Counter()  # (minute, current stage)
        self.changes_seen = 0
        self.changes_by_dimension: Counter[str] = Counter()
        self.first_change_at: float | None = None
        self.trigger_deadletters: deque[tuple[float, str]] = deque(maxlen=10_000)
        self.trigger_deadletters_total = 0
        self.worker_ok = False
        self.worker_error: str | None = None
        self.kafka_ok = False
        self.kafka_error: str | None = None

    # ----- inputs -----------------------------------------------------------------------------
    def add_sample(self, sample: WorkerSample) -> None:
        """A successful poll of the worker."""
        self.samples.append(sample)
        self.worker_ok, self.worker_error = True, None

    def worker_failed(self, error: str) -> None:
        self.worker_ok, self.worker_error = False, error

    def add_change(self, change: dict[str, Any], at: float) -> None:
        """A change event read from ``segment-changes`` at wall time ``at``."""
        data = change.get("data")
        if not isinstance(data, dict):
            return
        dimension = str(data.get("dimension"))
        previous = data.get("previous")
        current = str(data.get("current"))
        self.changes_seen += 1
        self.changes_by_dimension[dimension] += 1
        if self.first_change_at is None:
            self.first_change_at = at
        cause = data.get("cause") if isinstance(data.get("cause"), dict) else {}
        self.recent.appendleft(
            {
                "id": change.get("id"),
                "time": change.get("time"),
                "customer_id": data.get("customer_id"),
                "dimension": dimension,
                "previous": previous,
                "current": current,
                "cause": (cause or {}).get("kind"),
                "event_id": (cause or {}).get("event_id"),
            }
        )
        if dimension == "lifecycle":
            self.flows.append((at, FIRST if previous is None else str(previous), current))
            self.per_minute[(_minute(at), current)] += 1
            self._expire(at)

    def add_trigger_deadletter(self, letter: dict[str, Any], at: float) -> None:
        """A record of the triggers' dead-letter topic."""
        self.trigger_deadletters.append((at, str(letter.get("target"))))
        self.trigger_deadletters_total += 1

    def _expire(self, now: float) -> None:
        while self.flows and self.flows[0][0] < now - self.window_s:
            self.flows.popleft()
        old = _minute(now) - 60 * 60
        for key in [k for k in self.per_minute if k[0] < old]:
            del self.per_minute[key]

    # ----- output -----------------------------------------------------------------------------
    def _worker_deadletters(self, now: float) -> dict[str, Any]:
        with_counts = [s for s in self.samples if s.deadlettered is not None]
        series: list[list[float]] = []
        for i, sample in enumerate(with_counts):
            # rate over the trailing minute (or what history there is)
            j = i
            while j > 0 and with_counts[j - 1].at >= sample.at - 60:
                j -= 1
            base = with_counts[j - 1] if j > 0 else with_counts[0]
            span = sample.at - base.at
            delta = (sample.deadlettered or 0) - (base.deadlettered or 0)
            series.append([round(sample.at, 3), round(delta / span * 60, 3) if span > 0 else 0.0])
        last = with_counts[-1] if with_counts else None
        received = (last.received or 0.0) if last else 0.0
        dead = (last.deadlettered or 0.0) if last else 0.0
        return {
            "total": dead,
            "received": received,
            "share": dead / received if received else 0.0,
            "per_min": series[-1][1] if series else 0.0,
            "series": series[-300:],
            "reasons": dict(sorted((last.reasons if last else {}).items())),
        }

    def _trigger_deadletters(self, now: float) -> dict[str, Any]:
        recent = [(t, target) for t, target in self.trigger_deadletters if t >= now - 60]
        series = []
        for minute in range(_minute(now) - 29 * 60, _minute(now) + 1, 60):
            series.append(
                [minute, sum(1 for t, _ in self.trigger_deadletters if _minute(t) == minute)]
            )
        return {
            "total": self.trigger_deadletters_total,
            "per_min": len(recent),
            "series": series,
            "by_target": dict(Counter(target for _, target in self.trigger_deadletters)),
        }

    def snapshot(self, now: float) -> dict[str, Any]:
        """The JSON document behind ``/api/state``."""
        self._expire(now)
        latest = self.samples[-1].populations if self.samples else {}
        dims = sorted({d for s in self.samples for d in s.populations})
        history: dict[str, Any] = {"t": [round(s.at, 3) for s in self.samples], "series": {}}
        for dim in dims:
            values = sorted({v for s in self.samples for v in s.populations.get(dim, {})})
            history["series"][dim] = {
                v: [s.populations.get(dim, {}).get(v, 0) for s in self.samples] for v in values
            }
        counts = Counter((prev, cur) for _, prev, cur in self.flows)
        elapsed = now - (self.first_change_at or now)
        minutes = max(1.0, min(self.window_s, elapsed) / 60.0)
        flows = [
            {"from": prev, "to": cur, "count": n, "per_min": round(n / minutes, 3)}
            for (prev, cur), n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        ]
        stages = stage_order({p for p, _ in counts} | {c for _, c in counts})
        per_minute = []
        for minute in range(_minute(now) - 29 * 60, _minute(now) + 1, 60):
            by_stage = {stage: n for (m, stage), n in self.per_minute.items() if m == minute and n}
            per_minute.append({"minute": minute, "total": sum(by_stage.values()), **by_stage})
        customers = sum(latest.get("lifecycle", {}).values())
        walk = self.samples[-1].config_walk if self.samples else None
        recent_rate = sum(1 for t, _, _ in self.flows if t >= now - 60)
        return {
            "now": now,
            "worker": {"ok": self.worker_ok, "error": self.worker_error},
            "kafka": {"ok": self.kafka_ok, "error": self.kafka_error},
            "customers": customers,
            "populations": latest,
            "config_walk": walk,
            "history": history,
            "flows": flows,
            "flow_window_s": self.window_s,
            "stages": stages,
            "per_minute": per_minute,
            "lifecycle_per_min": recent_rate,
            "changes_seen": self.changes_seen,
            "changes_by_dimension": dict(sorted(self.changes_by_dimension.items())),
            "recent": list(self.recent),
            "deadletters": {
                "worker": self._worker_deadletters(now),
                "triggers": self._trigger_deadletters(now),
            },
        }
