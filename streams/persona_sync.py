"""One persona model shared by all workers.

Every worker's engine only samples feature vectors (it never trains on the hot path); the
samples go to Redis. The trainer — the worker that owns partition 0 of the website topic —
learns from them off the event loop (a thread) and publishes a new versioned snapshot; every
worker loads the latest version on its next tick. A restart loads the stored model.
"""

from __future__ import annotations

import asyncio
import logging

from segmentflow.engine.engine import Engine
from segmentflow.segmenters.persona import PersonaModel
from segmentflow.state.personas import PersonaModelStore

log = logging.getLogger("segmentflow.persona")


class PersonaSync:
    """Moves persona samples and model versions between an engine and a persona model store
    (Redis in the worker: :class:`~segmentflow.state.redis_personas.RedisPersonaStore`)."""

    def __init__(self, engine: Engine, store: PersonaModelStore, batch: int = 5000) -> None:
        self.engine = engine
        self.store = store
        self.batch = batch
        self.trainer = False
        self.version = 0
        self._learned_at_snapshot = 0
        engine.train_inline = False

    def refresh(self) -> None:
        """Load the latest published model if it is newer than ours."""
        latest = self.store.model_version()
        if latest > self.version:
            data = self.store.load_model()
            if data is not None:
                self.engine.persona = PersonaModel.loads(data)
                self.version = latest
                self._learned_at_snapshot = self.engine.persona.learned

    async def tick(self) -> None:
        """Ship samples; train and publish when this worker is the trainer; load updates. Off
        the event loop (Redis round trips, training, model loads): the worker calls it under
        its lock, so no batch uses the engine meanwhile."""
        if self.engine.persona is None:
            return
        await asyncio.to_thread(self.exchange)

    def exchange(self) -> None:
        """:meth:`tick`'s work, synchronously."""
        samples, self.engine.persona_samples = self.engine.persona_samples, []
        self.store.push_samples(samples)
        if self.trainer:
            vectors = self.store.take_samples(self.batch)
            if vectors:
                self._train(vectors)
        self.refresh()

    def _train(self, vectors: list[dict[str, float]]) -> None:
        model = self.engine.persona
        assert model is not None
        for vector in vectors:
            model.learn_one(vector)
        every = self.engine.config.persona.snapshot_every
        if model.learned - self._learned_at_snapshot >= every or model.current is None:
            snapshot = model.snapshot()
            self._learned_at_snapshot = model.learned
            self.version = max(self.version, self.store.model_version()) + 1
            self.store.save_model(model.dumps(), self.version)
            log.info("persona model v%d published (%d learned)", self.version, model.learned)
            del snapshot
