"""streams/persona_sync.py on an in-memory persona model store (a fake of the store interface):
samples are shipped every tick, only the trainer learns and publishes versions (the first
snapshot at once, later ones every ``snapshot_every`` vectors), every worker loads newer
versions and never an older or missing one."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any, cast

from segmentflow.config import config_from_dict
from segmentflow.engine.engine import Engine
from segmentflow.segmenters.persona import FEATURES, PersonaModel
from segmentflow.state.personas import PersonaModelStore
from segmentflow.streams.persona_sync import PersonaSync


class FakePersonaStore(PersonaModelStore):
    """Samples in a list, models by version; counts what was asked of it."""

    def __init__(self) -> None:
        self.samples: list[dict[str, float]] = []
        self.models: dict[int, bytes] = {}
        self.pushes = 0
        self.takes = 0

    def push_samples(self, vectors: Sequence[Mapping[str, float]], cap: int = 50_000) -> None:
        self.pushes += 1
        self.samples = (self.samples + [dict(v) for v in vectors])[-cap:]

    def take_samples(self, count: int) -> list[dict[str, float]]:
        self.takes += 1
        taken, self.samples = self.samples[:count], self.samples[count:]
        return taken

    def save_model(self, data: bytes, version: int) -> None:
        self.models[version] = data

    def model_version(self) -> int:
        return max(self.models, default=0)

    def load_model(self) -> bytes | None:
        return self.models.get(self.model_version())


def engine(snapshot_every: int = 50) -> Engine:
    persona = {"clusters": 2, "snapshot_every": snapshot_every}
    return Engine(config_from_dict({"rfm": {"enabled": False}, "persona": persona}))


def vectors(n: int, offset: int = 0) -> list[dict[str, float]]:
    return [{f: float((i + offset) % 2) * 5 for f in FEATURES} for i in range(n)]


def sync(e: Engine, store: FakePersonaStore, batch: int = 5000) -> PersonaSync:
    return PersonaSync(e, cast(Any, store), batch=batch)


def test_the_worker_engine_only_collects_samples() -> None:
    e = engine()
    sync(e, FakePersonaStore())
    assert e.train_inline is False


def test_a_worker_ships_its_samples_and_does_not_train() -> None:
    e, store = engine(), FakePersonaStore()
    worker = sync(e, store)
    e.persona_samples = vectors(10)
    asyncio.run(worker.tick())
    assert e.persona_samples == []
    assert len(store.samples) == 10 and store.takes == 0
    assert store.model_version() == 0 and worker.version == 0


def test_the_trainer_publishes_a_first_model_at_once_then_every_snapshot_every() -> None:
    e, store = engine(snapshot_every=50), FakePersonaStore()
    trainer = sync(e, store)
    trainer.trainer = True
    e.persona_samples = vectors(20)
    asyncio.run(trainer.tick())
    assert store.model_version() == 1 and trainer.version == 1  # no model yet: publish now
    assert store.samples == []
    e.persona_samples = vectors(40)  # 40 < 50 since the snapshot: no new version
    asyncio.run(trainer.tick())
    assert store.model_version() == 1
    e.persona_samples = vectors(10)  # 50 since the snapshot
    asyncio.run(trainer.tick())
    assert store.model_version() == 2
    model = PersonaModel.loads(store.models[2])
    assert model.learned == 70


def test_the_trainer_takes_at_most_batch_samples_per_tick() -> None:
    e, store = engine(), FakePersonaStore()
    trainer = sync(e, store, batch=15)
    trainer.trainer = True
    e.persona_samples = vectors(40)
    asyncio.run(trainer.tick())
    assert len(store.samples) == 25


def test_workers_load_newer_versions_only() -> None:
    store = FakePersonaStore()
    trainer_engine, worker_engine = engine(snapshot_every=1), engine()
    trainer = sync(trainer_engine, store)
    trainer.trainer = True
    worker = sync(worker_engine, store)
    before = worker_engine.persona
    worker.refresh()
    assert worker_engine.persona is before and worker.version == 0  # nothing published
    trainer_engine.persona_samples = vectors(30)
    asyncio.run(trainer.tick())
    worker.refresh()
    assert worker.version == store.model_version() == 1
    assert worker_engine.persona is not before
    assert worker_engine.persona is not None and worker_engine.persona.current is not None
    loaded = worker_engine.persona
    worker.refresh()  # same version: not loaded again
    assert worker_engine.persona is loaded


def test_a_second_trainer_continues_the_version_numbers() -> None:
    """After a rebalance the new trainer publishes above whatever is stored."""
    store = FakePersonaStore()
    first, second = engine(snapshot_every=1), engine(snapshot_every=1)
    a, b = sync(first, store), sync(second, store)
    a.trainer = True
    first.persona_samples = vectors(10)
    asyncio.run(a.tick())
    a.trainer, b.trainer = False, True
    second.persona_samples = vectors(10, offset=1)
    asyncio.run(b.tick())
    assert sorted(store.models) == [1, 2]


def test_nothing_happens_without_a_persona_model() -> None:
    e, store = engine(), FakePersonaStore()
    worker = sync(e, store)
    e.persona = None
    asyncio.run(worker.tick())
    assert store.pushes == 0
