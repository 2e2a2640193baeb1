"""One tolerant reader of a worker's ``/metrics``: the Prometheus text parsed by
``prometheus_client.parser`` (not split by hand), and a fetch that retries while the worker is
busy (it answers between batches) with a generous overall limit instead of one short timeout.

Examples
--------
>>> m = parse('# TYPE segmentflow_events_applied_total counter\\n'
...           'segmentflow_events_applied_total{topic="a"} 2.0\\n'
...           'segmentflow_events_applied_total{topic="b"} 3.0\\n'
...           'segmentflow_watermark_seconds 1.5\\n')
>>> m.total("segmentflow_events_applied_total"), m.total("segmentflow_watermark_seconds")
(5.0, 1.5)
>>> m.by_label("segmentflow_events_applied_total")
{'a': 2.0, 'b': 3.0}
>>> m.total("segmentflow_events_applied_total", topic="b"), m.total("missing")
(3.0, 0.0)
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from support.http import LIMIT_S, HasGet, get

#: overall limit of one fetch (the worker may be busy with a long batch on a loaded machine)
FETCH_LIMIT_S = LIMIT_S


@dataclass(frozen=True)
class Metrics:
    """Parsed samples of one ``/metrics`` answer (sample names, e.g. ``..._total``)."""

    samples: tuple[Sample, ...]
    text: str

    def __iter__(self) -> Iterator[Sample]:
        return iter(self.samples)

    def __contains__(self, name: object) -> bool:
        return any(s.name == name for s in self.samples)

    def named(self, name: str, **labels: str) -> list[Sample]:
        """The samples called ``name`` whose labels include ``labels``."""
        return [
            s
            for s in self.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        ]

    def total(self, name: str, **labels: str) -> float:
        """Sum of ``name`` over its label sets (restricted to ``labels``); 0 when absent."""
        return float(sum(s.value for s in self.named(name, **labels)))

    def by_label(self, name: str, label: str | None = None) -> dict[str, float]:
        """``name`` per value of ``label`` (default: its first label; ``""`` when unlabelled)."""
        out: dict[str, float] = defaultdict(float)
        for s in self.named(name):
            key = label if label is not None else next(iter(s.labels), None)
            out[s.labels.get(key, "") if key is not None else ""] += s.value
        return dict(out)

    def label_values(self, name: str, label: str) -> set[str]:
        """The values ``label`` takes on the samples of ``name``."""
        return {s.labels[label] for s in self.named(name) if label in s.labels}


def parse(text: str) -> Metrics:
    """Parse Prometheus exposition text."""
    samples = tuple(s for family in text_string_to_metric_families(text) for s in family.samples)
    return Metrics(samples, text)


def fetch_text(
    stack: HasGet,
    index: int = 0,
    token: str | None = None,
    limit: float = FETCH_LIMIT_S,
    pause: float = 0.5,
) -> str:
    """``/metrics`` of worker ``index``, retried (every ``pause`` s) on timeouts and refused
    connections until ``limit`` seconds passed (an HTTP error status is an answer: raised at
    once)."""
    return get(stack, "/metrics", index, token=token, limit=limit, pause=pause).decode()


def fetch(
    stack: HasGet,
    index: int = 0,
    token: str | None = None,
    limit: float = FETCH_LIMIT_S,
    pause: float = 0.5,
) -> Metrics:
    """:func:`fetch_text`, parsed."""
    return parse(fetch_text(stack, index, token=token, limit=limit, pause=pause))
