"""Redis persona model store: ``{ns:persona}:samples`` (list of JSON feature vectors),
``{ns:persona}:model`` (the pickled model) and ``{ns:persona}:version`` (its version number),
under one hash tag so a model and its version are saved in one ``MULTI`` on a cluster too."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import orjson

from segmentflow.state.client import RedisClient
from segmentflow.state.keys import Keys
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

    def __init__(self, client: RedisClient, namespace: str = "segmentflow") -> None:
        self.client = client
        self.namespace = namespace
        self.keys = Keys(namespace)

    def push_samples(self, vectors: Sequence[Mapping[str, float]], cap: int = 50_000) -> None:
        if not vectors:
            return
        pipe = self.client.pipeline(transaction=False)
        pipe.rpush(self.keys.persona_samples, *(orjson.dumps(v) for v in vectors))
        pipe.ltrim(self.keys.persona_samples, -cap, -1)
        pipe.execute()

    def take_samples(self, count: int) -> list[dict[str, float]]:
        rows = self.client.lpop(self.keys.persona_samples, count) or []
        return [orjson.loads(row) for row in rows]

    def save_model(self, data: bytes, version: int) -> None:
        pipe = self.client.pipeline(transaction=True)
        pipe.set(self.keys.persona_model, data)
        pipe.set(self.keys.persona_version, version)
        pipe.execute()

    def model_version(self) -> int:
        return int(self.client.get(self.keys.persona_version) or 0)

    def load_model(self) -> bytes | None:
        data: bytes | None = self.client.get(self.keys.persona_model)
        return data
