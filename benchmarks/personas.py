"""Persona clustering compared: ``minibatch`` (the default: k-means on a bounded sample of recent
vectors per snapshot) and River KMeans, STREAMKMeans, DBSTREAM and DenStream (online, one pass)
against scikit-learn's batch KMeans, on the synthetic generator's customers.

    .venv/bin/python benchmarks/personas.py [--customers 2000] [--days 180] [--seed 7]
                                             [--json OUT]

How (nothing here re-implements the features or the engine):

1. generate events (``segmentflow.synthetic.generate``) and the true archetype of every customer
   (``manifest``);
2. replay them (``segmentflow.service.replay.run``, decoded beforehand) with persona off, then
   with persona on for each algorithm (``persona.algorithm`` in the config): events/s, the
   persona changes emitted per customer, the ARI of every customer's last emitted persona
   against the archetypes and the share of customers whose persona label matches their
   archetype (``one_time_buyer`` counts as ``occasional_buyer``);
3. one more replay (default config) records the stream of feature vectors the engine learned from
   (one per customer and active UTC day, in order); each algorithm then learns that stream in
   one pass through :class:`PersonaModel` (timed: learn µs per vector);
4. every customer's final feature vector (``features(state, end)`` on the replayed state),
   standardised and weighted as the model does, is predicted with the final snapshot (timed:
   predict µs per vector) and clustered by ``sklearn.cluster.KMeans`` (k-means++, 10 inits).
   Reported: adjusted Rand index vs the archetypes and vs sklearn's labels, silhouette (same
   standardised space), number of clusters.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, ClassVar

import numpy as np
from rich.console import Console
from rich.table import Table
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score, silhouette_score
from sklearn.preprocessing import StandardScaler

from segmentflow.config import SegmentConfig, config_from_dict
from segmentflow.engine import engine as engine_module
from segmentflow.schemas.changes import Change
from segmentflow.schemas.decode import Event, Limits, validate_event
from segmentflow.segmenters.persona import (
    ALGORITHMS,
    FEATURES,
    WEIGHTS,
    PersonaModel,
    assign,
    features,
)
from segmentflow.service.replay import run
from segmentflow.state.memory import MemoryStore
from segmentflow.synthetic import generate, manifest

START = datetime(2025, 9, 1, tzinfo=UTC)
#: the label a persona of each archetype should carry
EXPECTED_LABEL = {"one_time_buyer": "occasional_buyer"}


def decode(rows: list[dict[str, Any]]) -> list[Event]:
    """Valid generator events as engine events."""
    limits = Limits()
    events = []
    for row in rows:
        event = validate_event(row, None, limits)
        assert isinstance(event, Event), event
        events.append(event)
    return events


class _Recording(PersonaModel):  # type: ignore[misc]
    """A PersonaModel that also keeps every vector it learns (the engine's training stream)."""

    stream: ClassVar[list[dict[str, float]]] = []

    def learn_one(self, vector: dict[str, float]) -> None:
        _Recording.stream.append(vector)
        super().learn_one(vector)


@contextlib.contextmanager
def recording() -> Iterator[list[dict[str, float]]]:
    """While active, engines built here record the feature vectors their persona model learns."""
    saved = engine_module.PersonaModel  # type: ignore[attr-defined]
    _Recording.stream = []
    engine_module.PersonaModel = _Recording  # type: ignore[attr-defined,misc]
    try:
        yield _Recording.stream
    finally:
        engine_module.PersonaModel = saved  # type: ignore[attr-defined,misc]


def replay(events: list[Event], config: SegmentConfig, repeat: int = 1) -> dict[str, Any]:
    """Replay (best time of ``repeat`` runs): seconds, changes, final states, the engine."""
    best: dict[str, Any] = {}
    for _ in range(repeat):
        store = MemoryStore()
        changes: list[Change] = []
        began = time.perf_counter()
        processor, _ = run(events, config, None, changes.append, store)
        seconds = time.perf_counter() - began
        if not best or seconds < best["seconds"]:
            best = {"seconds": seconds, "changes": changes, "store": store, "processor": processor}
    return best


def persona_outcome(result: dict[str, Any], truth: dict[str, str]) -> dict[str, Any]:
    """Replay-level persona figures: ARI of last personas, changes, label agreement."""
    last: dict[str, str] = {}
    count: Counter[str] = Counter()
    for change in result["changes"]:
        if change.dimension == "persona":
            last[change.customer_id] = change.current
            count[change.customer_id] += 1
    model = result["processor"].engine.persona
    snapshot = model.current
    ids = sorted(truth)
    predicted = [last.get(cid, "none") for cid in ids]
    labels = {
        cid: snapshot.labels.get(int(value.rsplit("-", 1)[1]), "?") for cid, value in last.items()
    }
    matching = sum(labels.get(cid) == EXPECTED_LABEL.get(truth[cid], truth[cid]) for cid in ids)
    by_archetype: dict[str, Counter[str]] = {}
    for cid in ids:
        by_archetype.setdefault(truth[cid], Counter())[labels.get(cid, "none")] += 1
    return {
        "replay_ari": adjusted_rand_score([truth[c] for c in ids], predicted),
        "changes_per_customer": sum(count.values()) / len(ids),
        "reassignments_per_customer": sum(max(0, n - 1) for n in count.values()) / len(ids),
        "placed": len(last) / len(ids),
        "label_agreement": matching / len(ids),
        "labels_by_archetype": {a: dict(c.most_common()) for a, c in sorted(by_archetype.items())},
        "persona_labels": {f"persona-{p}": lab for p, lab in sorted(snapshot.labels.items())},
    }


def offline(
    algorithm: str,
    clusters: int,
    seed: int,
    stream: list[dict[str, float]],
    finals: list[dict[str, float]],
) -> tuple[list[int], dict[str, float]]:
    """One pass over ``stream``, then predict ``finals`` with the final snapshot."""
    model = PersonaModel(algorithm, clusters, seed)
    began = time.perf_counter()
    for vector in stream:
        model.learn_one(vector)
    learn = time.perf_counter() - began
    snapshot = model.snapshot()
    began = time.perf_counter()
    predicted = [assign(snapshot, v, None, 0.0)[0] if snapshot.centers else 0 for v in finals]
    predict = time.perf_counter() - began
    return predicted, {
        "learn_us": 1e6 * learn / len(stream),
        "predict_us": 1e6 * predict / len(finals),
        "clusters_found": len(snapshot.centers),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--customers", type=int, default=2000)
    ap.add_argument("--days", type=int, default=180)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--clusters", type=int, default=6)
    ap.add_argument("--algorithms", nargs="+", default=list(ALGORITHMS), choices=ALGORITHMS)
    ap.add_argument("--repeat", type=int, default=2, help="timed replays: best of N (default 2)")
    ap.add_argument("--json", metavar="OUT", help="also write the figures as JSON here")
    args = ap.parse_args(argv)
    console = Console(width=200)

    rows = [
        m.event
        for m in generate(args.customers, args.seed, START, args.days)
        if m.event is not None and not m.duplicate
    ]
    events = decode(rows)
    truth = manifest(args.customers, args.seed)
    ids = sorted(truth)
    console.print(f"{len(events):,} events, {len(ids):,} customers, {args.days} days")

    off = replay(events, config_from_dict({"persona": {"enabled": False}}), args.repeat)
    off_rate = len(events) / off["seconds"]

    # the training stream and the final states do not depend on the algorithm
    with recording() as recorded:
        first = replay(events, config_from_dict({}))
    stream = list(recorded)
    end = max(event.ts for event in events)
    states = first["store"].load_many(ids)
    began = time.perf_counter()
    finals = [features(states[cid], end) for cid in ids]
    features_us = 1e6 * (time.perf_counter() - began) / len(ids)

    results: dict[str, dict[str, Any]] = {}
    for algorithm in args.algorithms:
        config = config_from_dict(
            {"persona": {"algorithm": algorithm, "clusters": args.clusters, "seed": args.seed}}
        )
        on = replay(events, config, args.repeat)
        results[algorithm] = {
            "events_per_s": len(events) / on["seconds"],
            **persona_outcome(on, truth),
        }
        console.print(f"replayed with {algorithm}: {results[algorithm]['replay_ari']:.3f} ARI")

    matrix = np.array([[v[f] for f in FEATURES] for v in finals])
    space = StandardScaler().fit_transform(matrix) * np.array([WEIGHTS[f] for f in FEATURES])
    began = time.perf_counter()
    batch = KMeans(n_clusters=args.clusters, n_init=10, random_state=args.seed).fit(space)
    batch_seconds = time.perf_counter() - began
    reference = [int(x) for x in batch.labels_]
    y = [truth[cid] for cid in ids]

    def quality(labels: list[int]) -> dict[str, float]:
        distinct = len(set(labels))
        return {
            "ari_archetypes": adjusted_rand_score(y, labels),
            "ari_sklearn": adjusted_rand_score(reference, labels),
            "silhouette": float(silhouette_score(space, labels)) if distinct > 1 else float("nan"),
        }

    for algorithm in args.algorithms:
        predicted, timing = offline(algorithm, args.clusters, args.seed, stream, finals)
        results[algorithm].update(timing)
        results[algorithm].update(quality(predicted))
    sklearn_row = {
        **quality(reference),
        "clusters_found": args.clusters,
        "fit_s": batch_seconds,
    }

    table = Table(title=f"Personas: {len(ids):,} customers, {len(stream):,} training vectors")
    for name in (
        "algorithm",
        "ARI vs archetypes",
        "ARI vs sklearn",
        "silhouette",
        "clusters",
        "learn µs",
        "predict µs",
        "replay ARI",
        "changes/customer",
        "label agreement",
        "replay events/s",
    ):
        table.add_column(name, justify="left" if name == "algorithm" else "right")
    for algorithm, r in results.items():
        table.add_row(
            algorithm if algorithm == "minibatch" else f"river {algorithm}",
            f"{r['ari_archetypes']:.3f}",
            f"{r['ari_sklearn']:.3f}",
            f"{r['silhouette']:.3f}",
            str(r["clusters_found"]),
            f"{r['learn_us']:.1f}",
            f"{r['predict_us']:.1f}",
            f"{r['replay_ari']:.3f}",
            f"{r['changes_per_customer']:.2f}",
            f"{100 * r['label_agreement']:.1f}%",
            f"{r['events_per_s']:,.0f}",
        )
    table.add_row(
        "sklearn KMeans (batch)",
        f"{sklearn_row['ari_archetypes']:.3f}",
        "1.000",
        f"{sklearn_row['silhouette']:.3f}",
        str(args.clusters),
        f"fit {sklearn_row['fit_s']:.2f} s",
        "",
        "",
        "",
        "",
        f"{off_rate:,.0f} (persona off)",
    )
    console.print(table)
    console.print(
        f"features() {features_us:.1f} µs per customer-day; persona placements: "
        f"{len(stream):,} for {len(events):,} events (once per customer and active UTC day)"
    )
    for algorithm, r in results.items():
        console.print(f"[bold]{algorithm}[/] labels by archetype: {r['labels_by_archetype']}")
    if args.json:
        out = {
            "customers": len(ids),
            "days": args.days,
            "seed": args.seed,
            "events": len(events),
            "training_vectors": len(stream),
            "features_us": features_us,
            "persona_off_events_per_s": off_rate,
            "algorithms": results,
            "sklearn_kmeans": sklearn_row,
        }
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(out, fh, indent=2, sort_keys=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
