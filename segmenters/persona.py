"""The ``persona`` dimension: online clustering (River) of standardised behavioral features.

- :func:`features` turns a customer's state into a small numeric vector: activity rates per 30
  days over the last 90 days (log-scaled), a shrunk average order value, smoothed email open and
  click rates and the days since the last website or purchase activity.
- :class:`PersonaModel` learns clusters of those vectors (standardised, then weighted by
  :data:`WEIGHTS`) and publishes immutable, versioned :class:`PersonaSnapshot` s. The default,
  ``minibatch``, learns from a bounded sample of recent vectors with a few k-means iterations
  per snapshot (cost per vector independent of the population); the River clusterers
  (``kmeans``, ``streamkmeans``, ``dbstream``, ``denstream``) learn every vector online.
  Each snapshot's centers are matched to the previous snapshot's (Hungarian assignment on center
  distance), so ``persona-3`` keeps meaning the same group as the model moves; each persona gets
  a human label from its center (:func:`label`).
- :func:`assign` picks a customer's persona from a snapshot with hysteresis: the customer moves
  only when the new center is clearly closer (by ``margin``).

Prediction uses snapshots only, so a worker never waits for training. The per-customer vectors
are tiny (9 numbers, 6 centers), so :func:`features` and :func:`assign` use plain Python floats:
that is faster than numpy at this size. ``benchmarks/personas.py`` compares the algorithms.
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

import numpy as np
from pydantic import BaseModel
from scipy.optimize import linear_sum_assignment

from segmentflow.config import PersonaConfig
from segmentflow.engine.state import WINDOW_DAYS, CustomerState, T, W
from segmentflow.schemas.changes import Change
from segmentflow.segmenters.dimension import Dimension, Emit, Getter, Moment, StateSlice

DAY_US = 86_400_000_000
FEATURES = (
    "order_rate",
    "avg_order_value",
    "page_views",
    "product_views",
    "cart_adds",
    "searches",
    "email_open_rate",
    "email_click_rate",
    "recency_days",
)
#: Weight of each feature in the (standardised) clustering space. Page and product views move
#: together, and the click rate follows the open rate: down-weighting them keeps the browsing
#: volume and email engagement from counting twice (measured in ``benchmarks/personas.py``).
WEIGHTS: dict[str, float] = {
    "order_rate": 1.0,
    "avg_order_value": 1.0,
    "page_views": 0.7,
    "product_views": 0.7,
    "cart_adds": 1.0,
    "searches": 1.0,
    "email_open_rate": 1.0,
    "email_click_rate": 0.5,
    "recency_days": 1.0,
}
ALGORITHMS = ("minibatch", "kmeans", "streamkmeans", "dbstream", "denstream")
#: ``minibatch``: vectors kept for learning (the most recent ones), and Lloyd iterations per
#: snapshot (warm-started from the previous centers; the first snapshot tries ``_INITS`` seeds)
SAMPLE = 4096
_ITERATIONS, _FIRST_ITERATIONS, _INITS = 8, 30, 4
#: ``minibatch``: standardise by the mean and variance of every vector learned (not only the
#: sample's), so the space stays put between snapshots and personas flip less
_GLOBAL_SCALE = True

#: Rates are per 30 days over the last ``WINDOW_DAYS`` days, or over the customer's whole life
#: when shorter (but at least ``_MIN_EXPOSURE`` days, so a first session is not a huge rate).
_MONTH = 30.0
_MIN_EXPOSURE = 30
#: Shrinkage priors: an average order value of 60 worth one order; open and click rates of 0.25
#: and 0.05 worth two delivered emails (few emails say little about a customer).
_AOV_PRIOR, _AOV_WEIGHT = 60.0, 1.0
_OPEN_PRIOR, _CLICK_PRIOR, _EMAIL_WEIGHT = 0.25, 0.05, 2.0
_T_ORDERS, _T_REVENUE, _T_DELIVERED, _T_OPENS, _T_CLICKS = (
    T[m] for m in ("orders", "revenue", "emails_delivered", "email_opens", "email_clicks")
)
#: Day-bucket metrics that count as website or purchase activity (for ``recency_days``).
_O, _PV, _PRV, _CA, _S, _CH = (
    W[m] for m in ("orders", "page_views", "product_views", "cart_adds", "searches", "checkouts")
)


def features(state: CustomerState, t: int) -> dict[str, float]:
    """The persona feature vector of ``state`` at ``t`` (:func:`feature_row` by name).

    ``order_rate``, ``page_views``, ``product_views``, ``cart_adds`` and ``searches`` are
    ``log1p`` of counts per 30 days over the last 90 days (or the customer's life if shorter,
    at least 30 days). ``avg_order_value`` is ``log1p`` of the lifetime average order value
    shrunk toward 60 (a customer without orders gets 60). Email rates are per delivered email,
    smoothed toward 0.25 (opens) and 0.05 (clicks). ``recency_days`` counts days since the last
    website or purchase activity, capped at 90 (email events alone do not make a customer
    active).

    Examples
    --------
    >>> from segmentflow.engine.state import CustomerState
    >>> f = features(CustomerState("c", first_seen=0, last_seen=0), 2 * DAY_US)
    >>> f["recency_days"], f["order_rate"], round(f["email_open_rate"], 2)
    (90.0, 0.0, 0.25)
    """
    return dict(zip(FEATURES, feature_row(state, t), strict=True))


def feature_row(state: CustomerState, t: int) -> list[float]:
    """:func:`features` as a list ordered as :data:`FEATURES` (the placement's hot path: one
    row serves learning, the nearest center and, on a change, the explanation)."""
    today = t // DAY_US
    low = today - WINDOW_DAYS
    orders = views = products = carts = searches = 0.0
    last_active = low
    for day, b in state.days.items():  # at most 90 buckets: unrolled on purpose (hot path)
        if low < day <= today:
            o, pv, prv, ca, se = b[_O], b[_PV], b[_PRV], b[_CA], b[_S]
            orders += o
            views += pv
            products += prv
            carts += ca
            searches += se
            if day > last_active and (o or pv or prv or ca or se or b[_CH]):
                last_active = day
    first = today if state.first_seen is None else state.first_seen // DAY_US
    months = max(_MIN_EXPOSURE, min(WINDOW_DAYS, today - first + 1)) / _MONTH
    totals = state.totals
    n_orders = totals[_T_ORDERS]
    aov = (max(0.0, totals[_T_REVENUE]) + _AOV_WEIGHT * _AOV_PRIOR) / (n_orders + _AOV_WEIGHT)
    delivered = totals[_T_DELIVERED] + _EMAIL_WEIGHT
    opens = totals[_T_OPENS] + _EMAIL_WEIGHT * _OPEN_PRIOR
    clicks = totals[_T_CLICKS] + _EMAIL_WEIGHT * _CLICK_PRIOR
    log1p = math.log1p
    return [
        log1p(orders / months),  # order_rate
        log1p(aov),  # avg_order_value
        log1p(views / months),  # page_views
        log1p(products / months),  # product_views
        log1p(carts / months),  # cart_adds
        log1p(searches / months),  # searches
        min(1.0, opens / delivered),  # email_open_rate
        min(1.0, clicks / delivered),  # email_click_rate
        float(today - last_active),  # recency_days
    ]


def make_clusterer(algorithm: str, clusters: int, seed: int) -> Any:
    """A River clusterer by name, with the parameters tuned in ``benchmarks/personas.py``
    (``None`` for ``minibatch``, which is :class:`PersonaModel`'s own).

    The k-means family starts every center at the mean (``sigma=0``): no random draws whose
    order depends on string hashing, so replays are reproducible across processes.
    """
    if algorithm == "minibatch":
        return None
    from river import cluster  # imported on use: River costs seconds at start-up

    if algorithm == "kmeans":
        return cluster.KMeans(n_clusters=clusters, halflife=0.01, sigma=0.0, seed=seed)
    if algorithm == "streamkmeans":
        return cluster.STREAMKMeans(  # type: ignore[no-untyped-call]
            chunk_size=500, n_clusters=clusters, halflife=0.2, sigma=0.0, seed=seed
        )
    if algorithm == "dbstream":
        return cluster.DBSTREAM(
            clustering_threshold=1.5, fading_factor=0.01, intersection_factor=0.3
        )
    if algorithm == "denstream":
        return cluster.DenStream(decaying_factor=0.01, beta=0.5, mu=20, epsilon=1.0)
    raise ValueError(f"unknown persona algorithm {algorithm!r}; choose one of {ALGORITHMS}")


def label(center: dict[str, float]) -> str:
    """A human label for a center in the original feature space (see :func:`features`).

    In order: ``dormant`` (no activity for 45+ days), ``loyal_high_value`` (0.75+ orders a
    month, average order 120+), ``email_engaged`` (opens half the emails or clicks a fifth),
    ``bargain_hunter`` (0.75+ orders a month, average order under 60), ``window_shopper`` (8+
    views and searches a month, under 0.75 orders), ``occasional_buyer`` (some orders) and
    ``browser``.

    Examples
    --------
    >>> label({"recency_days": 80.0})
    'dormant'
    >>> label({"order_rate": math.log1p(2.0), "avg_order_value": math.log1p(30.0)})
    'bargain_hunter'
    """
    get = center.get
    if get("recency_days", 0.0) >= 45:
        return "dormant"
    orders = math.expm1(get("order_rate", 0.0))
    aov = math.expm1(get("avg_order_value", 0.0))
    if orders >= 0.75 and aov >= 120:
        return "loyal_high_value"
    if get("email_open_rate", 0.0) >= 0.5 or get("email_click_rate", 0.0) >= 0.2:
        return "email_engaged"
    if orders >= 0.75 and aov < 60:
        return "bargain_hunter"
    browsing = sum(math.expm1(get(f, 0.0)) for f in ("page_views", "product_views", "searches"))
    if browsing >= 8 and orders < 0.75:
        return "window_shopper"
    if orders >= 0.05:
        return "occasional_buyer"
    return "browser"


@dataclass(frozen=True)
class PersonaSnapshot:
    """An immutable model version: standardisation, centers by stable id, labels, sizes.

    A feature's standardised value is ``(value - means[f]) / scales[f]``; ``scales`` already
    include the feature weights, so centers and customers share one Euclidean space.
    ``sizes`` counts the vectors learned per persona since the previous snapshot (``kmeans``
    only; empty for the other algorithms) and ``movement`` is the mean center movement since
    the previous snapshot.
    """

    version: int
    means: dict[str, float]
    scales: dict[str, float]
    centers: dict[int, np.ndarray]  # standardised space, ordered as FEATURES
    labels: dict[int, str]
    sizes: dict[int, int] = field(default_factory=dict)
    movement: float = 0.0  # mean center movement since the previous snapshot

    def _fast(self) -> tuple[list[tuple[str, float, float]], dict[int, tuple[float, ...]]]:
        """(feature, mean, 1/scale) triples and the centers as float tuples, cached: plain
        Python beats numpy for 9 features and a handful of centers."""
        fast: tuple[list[tuple[str, float, float]], dict[int, tuple[float, ...]]] | None
        fast = self.__dict__.get("_fast_cache")
        if fast is None:
            shift = [
                (f, self.means.get(f, 0.0), 1.0 / (self.scales.get(f, 1.0) or 1.0))
                for f in FEATURES
            ]
            plain = {
                pid: tuple(float(x) for x in self.centers[pid]) for pid in sorted(self.centers)
            }
            fast = (shift, plain)
            object.__setattr__(self, "_fast_cache", fast)
        return fast

    def _shift(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """The means and ``1/scale`` of :meth:`_fast` as two tuples ordered as FEATURES."""
        shift: tuple[tuple[float, ...], tuple[float, ...]] | None
        shift = self.__dict__.get("_shift_cache")
        if shift is None:
            triples, _ = self._fast()
            shift = (tuple(m for _, m, _ in triples), tuple(i for _, _, i in triples))
            object.__setattr__(self, "_shift_cache", shift)
        return shift

    def standardise(self, vector: dict[str, float]) -> np.ndarray:
        """The feature vector in the standardised space of this snapshot."""
        shift, _ = self._fast()
        return np.array([(vector[f] - mean) * inverse for f, mean, inverse in shift])

    def describe(self) -> dict[str, Any]:
        """JSON-able summary (for ``segments`` and ``/metrics``)."""
        return {
            "version": self.version,
            "personas": {
                f"persona-{pid}": {"label": self.labels[pid], "size": self.sizes.get(pid, 0)}
                for pid in sorted(self.centers)
            },
            "movement": round(self.movement, 4),
        }


def assign(
    snapshot: PersonaSnapshot,
    vector: dict[str, float],
    current: int | None,
    margin: float,
) -> tuple[int, dict[str, float]]:
    """Nearest persona id with hysteresis, and the features that placed the customer there.

    The customer keeps ``current`` unless another center is closer than ``(1 - margin)`` times
    the distance to it. The explanation holds up to three features (raw values) on which both
    the customer and the chosen center stand out from the population in the same direction.

    Examples
    --------
    >>> snap = PersonaSnapshot(1, {f: 0.0 for f in FEATURES}, {f: 1.0 for f in FEATURES},
    ...     {1: np.zeros(len(FEATURES)), 2: np.ones(len(FEATURES))}, {1: "a", 2: "b"})
    >>> assign(snap, {f: 0.55 for f in FEATURES}, 1, 0.2)[0]
    1
    >>> assign(snap, {f: 0.7 for f in FEATURES}, 1, 0.2)[0]
    2
    """
    best = nearest(snapshot, vector, current, margin)
    return best, explain(snapshot, vector, best)


def nearest(
    snapshot: PersonaSnapshot, vector: dict[str, float], current: int | None, margin: float
) -> int:
    """The persona :func:`assign` picks, without the explanation (the hot path: most
    placements keep the customer where it is)."""
    row = [vector[f] for f in FEATURES]
    return _nearest_point(snapshot, standardised_row(snapshot, row), current, margin)


def standardised_row(snapshot: PersonaSnapshot, row: list[float]) -> list[float]:
    """A :func:`feature_row` in the snapshot's standardised space (plain floats)."""
    means, inverses = snapshot._shift()
    return [(x - mean) * inverse for x, mean, inverse in zip(row, means, inverses)]  # noqa: B905


def _nearest_point(
    snapshot: PersonaSnapshot, point: list[float], current: int | None, margin: float
) -> int:
    _, plain = snapshot._fast()
    dist = math.dist
    # the smallest (distance, id), as ``min`` over the pairs picks it, in one pass
    best: int | None = None
    kept: int | None = None
    shortest = to_current = 0.0
    for pid, center in plain.items():
        d = dist(point, center)
        if best is None or d < shortest or (d == shortest and pid < best):
            best, shortest = pid, d
        if pid == current:
            kept, to_current = pid, d
    if best is None:
        raise ValueError("the persona snapshot has no centers")
    if kept is not None and shortest >= (1.0 - margin) * to_current:
        return kept
    return best


def explain(snapshot: PersonaSnapshot, vector: dict[str, float], best: int) -> dict[str, float]:
    """Up to three features (raw values) on which both the customer and persona ``best``'s
    center stand out from the population in the same direction."""
    row = [vector[f] for f in FEATURES]
    return _explain_point(snapshot, standardised_row(snapshot, row), row, best)


def _explain_point(
    snapshot: PersonaSnapshot, point: list[float], row: list[float], best: int
) -> dict[str, float]:
    """:func:`explain` of a standardised ``point`` and its raw :func:`feature_row`."""
    _, plain = snapshot._fast()
    scored = []
    for i, (x, c) in enumerate(zip(point, plain[best])):  # noqa: B905 - equal lengths
        product = x * c
        if product > 0:
            scored.append((-product, FEATURES[i], i))
    scored.sort()
    return {f: round(row[i], 3) for _, f, i in scored[:3]}


class PersonaModel:
    """Learns clusters of feature vectors and publishes stable, labeled snapshots.

    ``minibatch`` (the default) learns from a bounded sample: :meth:`learn_one` only keeps the
    vector in a ring of the :data:`SAMPLE` most recent ones, and :meth:`snapshot` standardises
    that sample, runs a few Lloyd (k-means) iterations warm-started from the previous snapshot's
    centers (k-means++ with a seeded generator the first time) and publishes the result. So the
    learning cost per vector does not depend on the population, and it is deterministic.

    The River algorithms learn every vector online: an online
    :class:`river.preprocessing.StandardScaler`, then weights (:data:`WEIGHTS`), then the
    clusterer.

    Parameters
    ----------
    algorithm
        ``minibatch`` (default), ``kmeans``, ``streamkmeans``, ``dbstream`` or ``denstream``.
    clusters
        Number of clusters for the k-means family.
    seed
        Random seed (deterministic replays).
    sample
        ``minibatch``: how many recent vectors a snapshot learns from.

    Examples
    --------
    >>> m = PersonaModel(clusters=2, seed=1)
    >>> for i in range(40):
    ...     m.learn_one({f: float(i % 2) * 5 for f in FEATURES})
    >>> snap = m.snapshot()
    >>> sorted(snap.centers), sorted(snap.sizes.values())
    ([1, 2], [20, 20])
    """

    def __init__(
        self, algorithm: str = "minibatch", clusters: int = 6, seed: int = 42, sample: int = SAMPLE
    ) -> None:
        self.algorithm = algorithm
        self.clusters = clusters
        self.seed = seed
        self.sample = sample
        from river import preprocessing  # imported on use: River costs seconds at start-up

        self._scaler: Any = preprocessing.StandardScaler()
        self._model: Any = make_clusterer(algorithm, clusters, seed)
        self._counts: dict[Any, int] = {}
        self._ring: list[list[float]] = []  # minibatch: recent vectors, oldest at ``_next``
        self._next = 0
        self._since = 0  # minibatch: vectors learned since the last snapshot
        self._moments = np.zeros((3, len(FEATURES)))  # minibatch: count, sum, sum of squares
        self.learned = 0
        self.current: PersonaSnapshot | None = None
        # draw any random initial coordinates in a fixed feature order (River draws them lazily
        # while iterating a set of names, whose order depends on string hashing)
        kmeans = self._model._kmeans if algorithm == "streamkmeans" else self._model
        for center in getattr(kmeans, "centers", {}).values():
            for f in FEATURES:
                center[f]  # a defaultdict: reading draws the value

    def __setstate__(self, state: dict[str, Any]) -> None:
        state.setdefault("_counts", {})  # models pickled before sizes were counted
        for key, value in (("sample", SAMPLE), ("_ring", []), ("_next", 0), ("_since", 0)):
            state.setdefault(key, value)  # models pickled before minibatch existed
        state.setdefault("_moments", np.zeros((3, len(FEATURES))))
        self.__dict__.update(state)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_mirror", None)  # rebuilt from the ring on use
        return state

    def learn_one(self, vector: dict[str, float]) -> None:
        """Learn from one customer's feature vector."""
        if self.algorithm == "minibatch":
            self.learn_row([vector[f] for f in FEATURES])
        else:
            self._learn_online(vector)

    def learn_row(self, row: list[float]) -> None:
        """:meth:`learn_one` of a :func:`feature_row` (kept as is: do not mutate it after)."""
        if self.algorithm != "minibatch":
            self._learn_online(dict(zip(FEATURES, row, strict=True)))
            return
        self.learned += 1
        if len(self._ring) < self.sample:
            self._ring.append(row)
        else:
            self._ring[self._next] = row
            self._next = (self._next + 1) % self.sample
        self._since += 1

    def _learn_online(self, vector: dict[str, float]) -> None:
        self.learned += 1
        scaler = self._scaler
        scaler.learn_one(vector)
        scaled = scaler.transform_one(vector)
        weighted = {f: scaled[f] * WEIGHTS[f] for f in FEATURES}
        if self.algorithm == "kmeans":
            index = self._model.learn_predict_one(weighted)
            self._counts[index] = self._counts.get(index, 0) + 1
        else:
            self._model.learn_one(weighted)

    def _raw_centers(self) -> list[tuple[Any, np.ndarray]]:
        model = self._model
        if self.algorithm == "denstream" and model.initialized:
            model.predict_one({f: 0.0 for f in FEATURES})  # re-runs its offline clustering
        centers = getattr(model, "centers", {})
        return [
            (key, np.array([float(c.get(f, 0.0)) for f in FEATURES]))
            for key, c in sorted(centers.items())
        ]

    def _sample_array(self) -> np.ndarray:
        """The ring as an array, oldest first (``np.array`` of the rotated ring): a mirror of
        the ring in which only the rows written since the last snapshot are converted."""
        ring, size, fresh = self._ring, len(self._ring), self._since
        mirror: np.ndarray | None = self.__dict__.get("_mirror")
        if mirror is None or fresh >= size or mirror.shape != (self.sample, len(FEATURES)):
            mirror = self.__dict__["_mirror"] = np.zeros((self.sample, len(FEATURES)))
            mirror[:size] = _as_array(ring)
        elif fresh:  # the latest writes sit at consecutive ring positions ending at `end`
            end = size if size < self.sample or self._next == 0 else self._next
            rows = (np.arange(end - fresh, end) % self.sample).tolist()
            mirror[rows] = _as_array([ring[i] for i in rows])
        if size < self.sample:
            return mirror[:size].copy()
        return np.concatenate((mirror[self._next :], mirror[: self._next]))

    def _learn_sample(
        self,
    ) -> tuple[dict[str, float], dict[str, float], list[tuple[Any, np.ndarray]]]:
        """``minibatch``: means, scales and keyed centers learned from the sample."""
        previous = self.current
        if not self._ring:
            if previous is None:
                zero = dict.fromkeys(FEATURES, 0.0)
                return zero, dict.fromkeys(FEATURES, 1.0), []
            return previous.means, previous.scales, sorted(previous.centers.items())
        ring = self._sample_array()  # oldest first
        weights = np.array([WEIGHTS[f] for f in FEATURES])
        fresh = ring[len(ring) - min(self._since, len(ring)) :]
        moments = self._moments
        moments[0] += len(fresh)
        moments[1] += fresh.sum(axis=0)
        moments[2] += (fresh**2).sum(axis=0)
        if _GLOBAL_SCALE and moments[0, 0] > 0:
            mean = moments[1] / moments[0]
            std = np.sqrt(np.maximum(moments[2] / moments[0] - mean**2, 0.0))
        else:
            mean = ring.mean(axis=0)
            std = ring.std(axis=0)
        std[std < 1e-12] = 1.0
        scale = std / weights
        points = (ring - mean) / scale
        k = min(self.clusters, len(points))
        if previous is not None and len(previous.centers) == k:
            old_ids = sorted(previous.centers)
            old_mean = np.array([previous.means[f] for f in FEATURES])
            old_scale = np.array([previous.scales[f] for f in FEATURES])
            raw = np.array([previous.centers[i] for i in old_ids]) * old_scale + old_mean
            centers, labels, _ = _lloyd(points, (raw - mean) / scale, _ITERATIONS)
        else:
            rng = np.random.default_rng(self.seed)
            best: tuple[np.ndarray, np.ndarray, float] | None = None
            for _ in range(_INITS):
                found = _lloyd(points, _kmeans_pp(points, k, rng), _FIRST_ITERATIONS)
                if best is None or found[2] < best[2]:
                    best = found
            assert best is not None
            centers, labels, _ = best
        recent = labels[len(labels) - min(self._since, len(labels)) :]
        counts = np.bincount(recent, minlength=k)
        self._counts = {i: int(counts[i]) for i in range(k)}
        self._since = 0
        means = {f: float(mean[i]) for i, f in enumerate(FEATURES)}
        scales = {f: float(scale[i]) for i, f in enumerate(FEATURES)}
        return means, scales, [(i, centers[i]) for i in range(k)]

    def snapshot(self) -> PersonaSnapshot:
        """A new version whose ids are matched to the previous version's; becomes current."""
        if self.algorithm == "minibatch":
            means, scales, keyed = self._learn_sample()
        else:
            scaler = self._scaler
            means = {f: float(scaler.means.get(f, 0.0)) for f in FEATURES}
            scales = {
                f: (math.sqrt(float(scaler.vars.get(f, 0.0))) or 1.0) / WEIGHTS[f] for f in FEATURES
            }
            keyed = self._raw_centers()
        raw = [center for _, center in keyed]
        previous = self.current
        ids: list[int]
        movement = 0.0
        if previous is None or not previous.centers or not raw:
            ids = list(range(1, len(raw) + 1))
        else:
            old_ids = sorted(previous.centers)
            cost = np.array(
                [[float(np.linalg.norm(r - previous.centers[o])) for o in old_ids] for r in raw]
            )
            rows, cols = linear_sum_assignment(cost)
            mapping = {int(r): old_ids[int(c)] for r, c in zip(rows, cols, strict=True)}
            movement = float(cost[rows, cols].mean()) if len(rows) else 0.0
            fresh = max(old_ids) + 1
            ids = []
            for index in range(len(raw)):
                if index in mapping:
                    ids.append(mapping[index])
                else:
                    ids.append(fresh)
                    fresh += 1
        centers = dict(zip(ids, raw, strict=True))
        labels = {
            pid: label({f: means[f] + scales[f] * float(c[i]) for i, f in enumerate(FEATURES)})
            for pid, c in centers.items()
        }
        sizes = {pid: self._counts.get(key, 0) for pid, (key, _) in zip(ids, keyed, strict=True)}
        self._counts = {}
        version = 1 if previous is None else previous.version + 1
        self.current = PersonaSnapshot(version, means, scales, centers, labels, sizes, movement)
        return self.current

    def dumps(self) -> bytes:
        """The trainer's full state (model, scaler, current snapshot) for Redis."""
        return pickle.dumps(self)

    @staticmethod
    def loads(data: bytes) -> PersonaModel:
        """Inverse of :meth:`dumps` (only for data this service wrote itself)."""
        model = pickle.loads(data)  # our own snapshot from our own Redis
        if not isinstance(model, PersonaModel):
            raise TypeError("not a PersonaModel snapshot")
        return model


def _as_array(rows: list[list[float]]) -> np.ndarray:
    """``np.array(rows, dtype=float)`` of equal-length rows, through one flat ``fromiter``
    (the same floats, several times faster than converting nested lists)."""
    flat = np.fromiter(chain.from_iterable(rows), dtype=np.float64, count=len(rows) * len(FEATURES))
    return flat.reshape(len(rows), len(FEATURES))


def _kmeans_pp(points: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding: each next center drawn with probability proportional to the squared
    distance to the nearest chosen one."""
    chosen = [int(rng.integers(len(points)))]
    nearest = ((points - points[chosen[0]]) ** 2).sum(axis=1)
    for _ in range(1, k):
        total = float(nearest.sum())
        if total <= 0.0:
            chosen.append(chosen[-1])
            continue
        pick = int(np.searchsorted(np.cumsum(nearest), rng.random() * total, side="right"))
        pick = min(pick, len(points) - 1)
        chosen.append(pick)
        nearest = np.minimum(nearest, ((points - points[pick]) ** 2).sum(axis=1))
    return points[chosen].copy()


def _lloyd(
    points: np.ndarray, centers: np.ndarray, iterations: int
) -> tuple[np.ndarray, np.ndarray, float]:
    """Lloyd iterations: (centers, labels, inertia). A center left without points stays."""
    centers = centers.copy()
    squares = (points**2).sum(axis=1)
    labels = np.zeros(len(points), dtype=np.int64)
    distances = np.zeros((len(points), len(centers)))
    columns = np.ascontiguousarray(points.T)
    k = len(centers)
    for _ in range(iterations):
        distances = squares[:, None] - 2.0 * points @ centers.T + (centers**2).sum(axis=1)
        labels = distances.argmin(axis=1)
        # per-center sums, each added in point order as ``np.add.at`` does (same floats, ~3x)
        sums = np.stack([np.bincount(labels, weights=c, minlength=k) for c in columns], axis=1)
        counts = np.bincount(labels, minlength=k)
        filled = counts > 0
        moved = centers.copy()
        moved[filled] = sums[filled] / counts[filled, None]
        if np.array_equal(moved, centers):
            break
        centers = moved
    distances = squares[:, None] - 2.0 * points @ centers.T + (centers**2).sum(axis=1)
    labels = distances.argmin(axis=1)
    inertia = float(np.maximum(distances[np.arange(len(points)), labels], 0.0).sum())
    return centers, labels, inertia


@dataclass(slots=True)
class PersonaSlice(StateSlice):
    """The UTC day of the customer's latest placement (at most one per day)."""

    day: int | None = None

    def dump(self) -> list[Any]:
        return [self.day]

    @classmethod
    def load(cls, version: int, data: list[Any]) -> PersonaSlice:
        return cls(*data)


_LEGACY_DAY = "persona_day"  # where states encoded before the slices kept the day
#: samples a worker collects for the separate trainer between two handovers
MAX_SAMPLES = 20_000


class Persona(Dimension):
    """The ``persona`` dimension: once per customer and UTC day, learn from (or sample) its
    :func:`features` and re-place it with :func:`nearest` (hysteresis, so a session's burst of
    events does not flip personas).

    Attributes
    ----------
    model
        The :class:`PersonaModel` (``None`` when disabled); a worker swaps in trained ones.
    train_inline
        Learn in-process (replay) or only collect :attr:`samples` for a separate trainer.

    Examples
    --------
    >>> from segmentflow.config import PersonaConfig
    >>> Persona(PersonaConfig()).names(), Persona(PersonaConfig(enabled=False)).model
    (['persona'], None)
    """

    kind = "persona"
    Params = PersonaConfig
    slice_type = PersonaSlice

    def __init__(self, params: BaseModel) -> None:
        super().__init__(params)
        assert isinstance(params, PersonaConfig)
        self.cfg = params
        self.model: PersonaModel | None = (
            PersonaModel(params.algorithm, params.clusters, params.seed) if params.enabled else None
        )
        self.train_inline = True
        self.samples: list[dict[str, float]] = []
        self._warmup = 50 * params.clusters

    def names(self) -> list[str]:
        return [self.kind] if self.model is not None else []

    def evaluate(self, state: CustomerState, at: Moment, emit: Emit) -> list[Change]:
        model = self.model
        if model is None:
            return []
        t = at.t
        today = t // DAY_US
        placed = self.slice(state)
        if placed.day == today:
            return []
        placed.day = today
        row = feature_row(state, t)
        if self.train_inline:
            model.learn_row(row)
            if model.learned % self.cfg.snapshot_every == 0:
                model.snapshot()
        elif len(self.samples) < MAX_SAMPLES:
            self.samples.append(dict(zip(FEATURES, row, strict=True)))
        snapshot = model.current
        if snapshot is None or not snapshot.centers or model.learned < self._warmup:
            return []
        value = state.values.get(self.kind)
        current = int(value.rsplit("-", 1)[1]) if value else None
        point = standardised_row(snapshot, row)
        pid = _nearest_point(snapshot, point, current, self.cfg.margin)
        name = f"persona-{pid}"
        if name == value:
            return []
        why = _explain_point(snapshot, point, row, pid)  # a change only (most keep theirs)
        reason = {"label": snapshot.labels[pid], "features": why, "model_version": snapshot.version}
        return [emit(state, self.kind, name, at, reason)]

    def merge_slice(self, survivor: CustomerState, merged: CustomerState) -> None:
        """A merged profile is placed again at the merge (the once-a-day limit starts over)."""
        if self.model is not None:
            self.slice(survivor).day = None

    def migrate(self, state: CustomerState) -> PersonaSlice | None:
        day = state.extra.pop(_LEGACY_DAY, None)
        return None if day is None else PersonaSlice(day)

    def variables(self) -> Mapping[str, Getter]:
        return {self.kind: lambda s, _today: s.values.get(self.kind)}

    def time_dependent(self) -> frozenset[str]:
        return frozenset({self.kind})

    def dump_population(self) -> bytes | None:
        return None if self.model is None else self.model.dumps()

    def load_population(self, data: bytes) -> None:
        self.model = PersonaModel.loads(data)
