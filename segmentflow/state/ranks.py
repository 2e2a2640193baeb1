"""The RFM rank sync interface: every worker keeps an exact local
:class:`~segmentflow.segmenters.rfm.RankIndex` of the whole population, loaded once and then
kept current with the updates other workers commit.

One process needs no sync (its engine's index is the population); several workers share one
through :class:`~segmentflow.state.redis_ranks.RedisRankSync`, which the Redis state store
drives: its loads read the updates and its commits write them, in the same round trip and
transaction as the states (so a metric never runs ahead of its state).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from segmentflow.segmenters.rfm import RankIndex


class RankSync(ABC):
    """Keeps a local rank index equal to the population's metrics."""

    @abstractmethod
    def attach(self, ranks: RankIndex) -> None:
        """Load the population's metrics into ``ranks`` and keep it current from now on."""

    @property
    @abstractmethod
    def corrupt_metrics(self) -> int:
        """Stored metrics that could not be read so far (skipped; ``/metrics``)."""
