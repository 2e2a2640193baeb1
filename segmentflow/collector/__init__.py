"""Segment-compatible HTTP collector (CONTRACT §9): ``segmentflow collect``.

See :mod:`segmentflow.collector.mapping` for how calls become events (and the userId /
anonymousId choice), :mod:`segmentflow.collector.app` for the HTTP side.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from segmentflow.collector.app import CollectorConfig, create_app, parse_write_keys
from segmentflow.collector.mapping import (
    DEFAULT_MAX_FUTURE_SKEW_US,
    DEFAULT_MAX_MONEY,
    Bounds,
    TrackMap,
    TrackMapError,
    map_call,
)
from segmentflow.collector.sink import KafkaSink, MemorySink, Record, Sink, SinkError
from segmentflow.config import Settings
from segmentflow.schemas.decode import Limits

__all__ = [
    "Bounds",
    "CollectorConfig",
    "KafkaSink",
    "MemorySink",
    "Record",
    "Sink",
    "SinkError",
    "TrackMap",
    "TrackMapError",
    "config_from_settings",
    "create_app",
    "load_track_map",
    "map_call",
    "parse_write_keys",
]


def load_track_map(value: str | None) -> dict[str, str]:
    """The custom track map from ``SEGMENTFLOW_COLLECTOR_TRACK_MAP``: inline JSON (``{...}``)
    or the path of a JSON/YAML file; ``{}`` when unset."""
    if value is None or not value.strip():
        return {}
    text = value.strip()
    source = "SEGMENTFLOW_COLLECTOR_TRACK_MAP"
    data: Any
    if not text.startswith("{"):
        path = Path(text)
        if not path.is_file():
            raise TrackMapError(f"{source}: {text!r} is neither a JSON object nor a file")
        source, text = str(path), path.read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text)  # JSON is YAML
    except yaml.YAMLError as exc:
        raise TrackMapError(f"{source}: not valid JSON/YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise TrackMapError(f"{source}: must be an object of track name -> event type")
    return {str(k): v for k, v in data.items()}


def _limits(segment: Any) -> Limits:
    """The worker's decoder limits for this config (with its ``max_money`` where it has one)."""
    of = getattr(Limits, "of", None)
    if of is not None:
        limits: Limits = of(segment)
        return limits
    return Limits(segment.max_event_bytes, segment.max_traits, segment.max_trait_length)


def config_from_settings(settings: Settings, track_map: str | None = None) -> CollectorConfig:
    """The collector config from the environment (``track_map`` overrides the env option)."""
    segment = settings.segment_config()
    # the worker's bounds (CONTRACT §2 max_money, max_future_skew), same config file
    bounds = Bounds(
        float(getattr(segment, "max_money", DEFAULT_MAX_MONEY)),
        int(getattr(segment, "max_future_skew_us", DEFAULT_MAX_FUTURE_SKEW_US)),
    )
    return CollectorConfig(
        write_keys=parse_write_keys(settings.write_keys),
        topics=settings.input_topics,
        deadletter_topic=settings.topic_segmentflow_deadletter,
        tracks=TrackMap(load_track_map(track_map or settings.collector_track_map)),
        limits=_limits(segment),
        bounds=bounds,
        api_token=settings.api_token or None,
    )
