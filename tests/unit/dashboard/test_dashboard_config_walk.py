"""The dashboard shows a config re-evaluation's progress (CONTRACT §6) from the worker's own
``/metrics`` text (rendered by the worker's exposition code, so the names cannot drift)."""

from __future__ import annotations

from support.fakes import FakeKafka

from segmentflow.config import Settings, config_from_dict
from segmentflow.dashboard.state import DashboardState, WorkerSample, parse_config_walk
from segmentflow.service.processor import Processor
from segmentflow.state.memory import MemoryStore
from segmentflow.streams.metrics import registry_for, render
from segmentflow.streams.runtime import SegmentWorker


def _metrics(running: bool, pending: int, customers: int, changes: int) -> str:
    kafka = FakeKafka()
    processor = Processor(
        config_from_dict({"persona": {"enabled": False}}), MemoryStore(outbox=True)
    )
    worker = SegmentWorker(Settings(), processor, kafka.send, kafka.ack)
    progress = worker.config_walk.progress
    progress.running, progress.pending_shards = running, pending
    progress.customers, progress.changes = customers, changes
    return render(registry_for(worker)).decode()


def test_a_running_walk_is_in_the_snapshot_and_a_finished_one_says_so() -> None:
    state = DashboardState()
    walk = parse_config_walk(_metrics(True, 3, 1500, 420))
    assert walk == {"running": True, "pending_shards": 3, "customers": 1500, "changes": 420}
    state.add_sample(WorkerSample(1.0, {"rule:big": {"in": 7}}, config_walk=walk))
    assert state.snapshot(2.0)["config_walk"] == walk
    done = parse_config_walk(_metrics(False, 0, 4000, 900))
    state.add_sample(WorkerSample(3.0, {"rule:big": {"in": 9}}, config_walk=done))
    assert state.snapshot(4.0)["config_walk"] == {
        "running": False,
        "pending_shards": 0,
        "customers": 4000,
        "changes": 900,
    }


def test_a_worker_without_the_metrics_reports_nothing() -> None:
    assert parse_config_walk("# TYPE segmentflow_batches_total counter\n") is None
    state = DashboardState()
    state.add_sample(WorkerSample(1.0, {}))
    assert state.snapshot(2.0)["config_walk"] is None
    assert DashboardState().snapshot(1.0)["config_walk"] is None
