"""Redis persona model store: ``ns:persona:samples`` (list of JSON feature vectors),
``ns:persona:model`` (the pickled model) and ``ns:persona:version`` (its version number)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import orjson
import redis

from segmentflow.state.personas import PersonaModelStore


class RedisPersonaStore(PersonaModelStore):
    """Persona samples and model versions shared by all workers through Redis.

    Parameters
    ----------
    client
        The Redis client (shared with the state store).
    namespace
        Key prefix (``SEGMENTFLOW_NAMESPACE``).
    """

    def __init__(self, client: redis.Redis[bytes], namespace: str = "segmentflow") -> None:
        self.client = client
        self.namespace = namespace

    @property
    def _samples_key(self) -> str:
        return f"{self.namespace}:persona:samples"

    def push_samples(self, vectors: Sequence[Mapping[str, float]], cap: int = 50_000) -> None:
        if not vectors:
            return
        pipe = self.client.pipeline(transaction=False)
        pipe.rpush(self._samples_key, *(orjson.dumps(v) for v in vectors))
        pipe.ltrim(self._samples_key, -cap, -1)
        pipe.execute()

    def take_samples(self, count: int) -> list[dict[str, float]]:
        rows = self.client.lpop(self._samples_key, count) or []
        return [orjson.loads(row) for row in rows]

    def save_model(self, data: bytes, version: int) -> None:
        pipe = self.client.pipeline(transaction=True)
        pipe.set(f"{self.namespace}:persona:model", data)
        pipe.set(f"{self.namespace}:persona:version", version)
        pipe.execute()

    def model_version(self) -> int:
        return int(self.client.get(f"{self.namespace}:persona:version") or 0)

    def load_model(self) -> bytes | None:
        data: bytes | None = self.client.get(f"{self.namespace}:persona:model")
        return data
