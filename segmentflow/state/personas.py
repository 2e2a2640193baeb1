"""The persona model store interface: feature samples for the trainer and versioned models.

Every worker's engine samples feature vectors; the trainer takes them, learns, and publishes a
new model version that every worker loads (:mod:`segmentflow.streams.persona_sync`). Backends:
:class:`~segmentflow.state.memory.MemoryPersonaStore` and
:class:`~segmentflow.state.redis_personas.RedisPersonaStore`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence


class PersonaModelStore(ABC):
    """Where persona samples wait for the trainer and model versions are published."""

    @abstractmethod
    def push_samples(self, vectors: Sequence[Mapping[str, float]], cap: int = 50_000) -> None:
        """Queue feature vectors for the trainer (the oldest dropped beyond ``cap``)."""

    @abstractmethod
    def take_samples(self, count: int) -> list[dict[str, float]]:
        """Take up to ``count`` queued feature vectors, oldest first (the trainer only)."""

    @abstractmethod
    def save_model(self, data: bytes, version: int) -> None:
        """Publish a model version (atomically with its version number)."""

    @abstractmethod
    def model_version(self) -> int:
        """The latest published model version (0 when none)."""

    @abstractmethod
    def load_model(self) -> bytes | None:
        """The latest published model (``None`` when none)."""
