"""Configuration: the YAML segmentation config (CONTRACT §6) and the environment (§7).

The YAML file is validated strictly: an unknown key, a bad rule name or a rule expression that
does not compile stops start-up with a :class:`ConfigError` naming the key or rule.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

DAY_US = 86_400_000_000
HOUR_US = 3_600_000_000
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(us|ms|s|m|h|d)?\s*$")
_UNIT_US = {"us": 1, "ms": 1_000, "s": 1_000_000, "m": 60_000_000, "h": HOUR_US, "d": DAY_US}
RULE_NAME = re.compile(r"^[a-z0-9_]+$")

DEFAULT_RFM_SEGMENTS: dict[str, str] = {
    "champions": "5[4-5]",
    "loyal_customers": "[3-4][4-5]",
    "potential_loyalists": "[4-5][2-3]",
    "new_customers": "51",
    "promising": "41",
    "need_attention": "33",
    "about_to_sleep": "3[1-2]",
    "at_risk": "[1-2][3-4]",
    "cannot_lose": "[1-2]5",
    "hibernating": "[1-2][1-2]",
}


class ConfigError(ValueError):
    """The configuration is invalid; the message names the offending key or rule."""


def parse_duration_us(value: str | int | float) -> int:
    """Parse ``"90s"``, ``"24h"``, ``"2d"`` or a number of seconds into microseconds.

    Examples
    --------
    >>> parse_duration_us("24h") == 24 * 3_600_000_000
    True
    >>> parse_duration_us(0)
    0
    """
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, int | float):
        return int(value * 1_000_000)
    match = _DURATION.match(value)
    if not match:
        raise ValueError(f"not a duration: {value!r} (use e.g. 0s, 500ms, 10m, 24h, 2d)")
    number, unit = match.groups()
    return int(float(number) * _UNIT_US[unit or "s"])


class _Named(Protocol):
    @property
    def name(self) -> str: ...


_N = TypeVar("_N", bound=_Named)


def unique_names(items: list[_N], what: str) -> list[_N]:
    """``items`` when no two share a ``name``; else a ValueError naming the repeated one
    (``what`` says what it is: "rule", "target").

    Examples
    --------
    >>> unique_names([RuleConfig(name="a", when="true")], "rule")[0].name
    'a'
    >>> unique_names([RuleConfig(name="a", when="true")] * 2, "rule")
    Traceback (most recent call last):
    ValueError: rule 'a' is defined twice
    """
    seen: set[str] = set()
    for item in items:
        if item.name in seen:
            raise ValueError(f"{what} {item.name!r} is defined twice")
        seen.add(item.name)
    return items


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LifecycleConfig(_Strict):
    """Lifecycle thresholds in days (CONTRACT §3)."""

    new_days: float = Field(default=30, gt=0)
    reactivated_days: float = Field(default=30, gt=0)
    at_risk_days: float = Field(default=90, gt=0)
    churned_days: float = Field(default=180, gt=0)

    @property
    def new_us(self) -> int:
        return int(self.new_days * DAY_US)

    @property
    def reactivated_us(self) -> int:
        return int(self.reactivated_days * DAY_US)

    @property
    def at_risk_us(self) -> int:
        return int(self.at_risk_days * DAY_US)

    @property
    def churned_us(self) -> int:
        return int(self.churned_days * DAY_US)


class RfmConfig(_Strict):
    """RFM scoring options (CONTRACT §3 "Default RFM")."""

    enabled: bool = True
    sweep_every: str = "24h"
    segments: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_RFM_SEGMENTS))

    @field_validator("sweep_every")
    @classmethod
    def _duration(cls, value: str) -> str:
        parse_duration_us(value)
        return value


class PersonaConfig(_Strict):
    """Persona clustering options (documented in the README)."""

    enabled: bool = True
    algorithm: Literal["minibatch", "kmeans", "streamkmeans", "dbstream", "denstream"] = "minibatch"
    clusters: int = Field(default=6, ge=2, le=50)
    margin: float = Field(default=0.25, ge=0, lt=1)
    snapshot_every: int = Field(default=1000, ge=1)
    seed: int = 42


class RuleConfig(_Strict):
    """One rule segment: a name and a CEL expression."""

    name: str
    when: str

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not RULE_NAME.match(value):
            raise ValueError(f"rule name {value!r} must match [a-z0-9_]+")
        return value


class DimensionEntry(BaseModel):
    """An extra dimension: a registered one by name (``dimensions: [{kind: clv, ...params}]``)
    or a class to import (``dimensions: [{class: "pkg.mod:Class", ...params}]``); the other
    keys are its parameters (validated by the class's ``Params``)."""

    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True)

    class_: str | None = Field(default=None, alias="class")
    kind: str | None = None

    @model_validator(mode="after")
    def _one_of(self) -> DimensionEntry:
        if (self.class_ is None) == (self.kind is None):
            raise ValueError(
                "give either `kind` (a registered dimension, e.g. clv or interest) "
                'or `class` ("package.module:Class"), not both or neither'
            )
        return self

    @property
    def label(self) -> str:
        """How error messages name the entry."""
        return f"class {self.class_!r}" if self.class_ is not None else f"kind {self.kind!r}"

    def params(self) -> dict[str, Any]:
        """The entry's keys other than ``class`` / ``kind``."""
        return dict(self.model_extra or {})


class SegmentConfig(_Strict):
    """The segmentation config file (CONTRACT §6); every key optional."""

    clock: Literal["event", "wall"] = "event"
    allowed_lateness: str = "0s"
    max_event_bytes: int = Field(default=65536, gt=0)
    #: largest accepted money amount (CONTRACT §2); capped so that no sum of amounts can
    #: overflow a float total (and stays exact to the cent far beyond any real revenue)
    max_money: float = Field(default=1e9, gt=0, le=1e15)
    #: how far after the receiving process's wall clock an event timestamp may lie (§2)
    max_future_skew: str = "24h"
    #: a repeated event_id within this much event time of the customer's latest event is
    #: applied once, exactly (§2)
    dedup_horizon: str = "7d"
    lifecycle: LifecycleConfig = Field(default_factory=lambda: LifecycleConfig())
    rfm: RfmConfig = Field(default_factory=RfmConfig)
    persona: PersonaConfig = Field(default_factory=lambda: PersonaConfig())
    rules: list[RuleConfig] = Field(default_factory=list)
    # extensions (not in the contract's list, all optional)
    #: deprecated (before ``dedup_horizon``: how many recent ids were kept); accepted, no effect
    dedup_window: int | None = Field(default=None, ge=1)
    max_traits: int = Field(default=100, ge=1)
    max_trait_length: int = Field(default=1024, ge=1)
    #: user dimensions, run after the built-ins and before the rules (docs/dimensions.md)
    dimensions: list[DimensionEntry] = Field(default_factory=list)

    @field_validator("allowed_lateness", "max_future_skew", "dedup_horizon")
    @classmethod
    def _lateness(cls, value: str) -> str:
        parse_duration_us(value)
        return value

    @field_validator("rules")
    @classmethod
    def _unique(cls, rules: list[RuleConfig]) -> list[RuleConfig]:
        return unique_names(rules, "rule")

    @property
    def allowed_lateness_us(self) -> int:
        return parse_duration_us(self.allowed_lateness)

    @property
    def max_future_skew_us(self) -> int:
        return parse_duration_us(self.max_future_skew)

    @property
    def dedup_horizon_us(self) -> int:
        return parse_duration_us(self.dedup_horizon)

    @property
    def rfm_sweep_us(self) -> int:
        return parse_duration_us(self.rfm.sweep_every)


def _describe(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "(top level)"
        if item["type"] == "extra_forbidden":
            parts.append(f"unknown key {where!r}")
        else:
            parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)


describe_validation = _describe


def config_from_dict(data: dict[str, Any] | None, source: str = "config") -> SegmentConfig:
    """Validate a config mapping and compile its rules; raise :class:`ConfigError` if invalid."""
    try:
        config = SegmentConfig.model_validate(data or {})
    except ValidationError as exc:
        raise ConfigError(f"{source}: {_describe(exc)}") from None
    # load the dimensions and compile the rules now so a broken one stops start-up
    from segmentflow.segmenters.registry import build_dimensions

    build_dimensions(config)
    return config


def read_yaml_mapping(file: Path, error: type[Exception], top_level: str) -> dict[str, Any] | None:
    """The YAML mapping in the existing ``file`` (``None`` when empty); bad YAML or another top
    level raises ``error`` naming the file (``top_level`` says what is expected)."""
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise error(f"{file}: not valid YAML: {exc}") from None
    if data is not None and not isinstance(data, dict):
        raise error(f"{file}: the top level must be {top_level}")
    return data


def load_config(path: str | Path | None) -> SegmentConfig:
    """Load the YAML config at ``path`` (or the defaults when ``None``)."""
    if path is None or str(path) == "":
        return config_from_dict({})
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"config file {str(file)!r} not found (check SEGMENTFLOW_CONFIG)")
    data = read_yaml_mapping(file, ConfigError, "a mapping of keys (§6)")
    return config_from_dict(data, str(file))


class Settings(BaseSettings):
    """Process settings from the environment (CONTRACT §7)."""

    model_config = SettingsConfigDict(env_prefix="SEGMENTFLOW_", extra="ignore")

    kafka_url: str = "kafka://127.0.0.1:9092"
    #: one Redis: ``redis://[[user]:password@]host:port/db`` (``rediss://`` for TLS); a Redis
    #: Cluster: ``redis+cluster://[[user]:password@]host1:port1,host2:port2/`` (seed nodes,
    #: ``rediss+cluster://`` for TLS); query options (``?ssl_cert_reqs=none``,
    #: ``ssl_ca_certs=...``) reach every node (README "Redis Cluster")
    redis_url: str = "redis://127.0.0.1:6379/0"
    #: replicas that must hold every commit before its changes are published and its offsets
    #: committed (0: the primary's acknowledgement is enough). Redis replicates
    #: asynchronously, so with 0 a failover can lose the last commits of a dead primary;
    #: with 1 on a cluster whose primaries have a replica, nothing acknowledged is lost
    redis_min_replicas: int = Field(default=0, ge=0)
    #: seconds a commit waits for ``redis_min_replicas`` before it counts as failed (retried)
    redis_replica_timeout: float = Field(default=5.0, gt=0)
    #: decoded customer states a worker keeps between batches (about 1.4 KB each for short
    #: histories): fewer round trips and decodes for customers seen again or re-scored by a
    #: sweep. Raise it towards the customers a worker owns where memory allows (100,000 at
    #: 100k customers: 1.08x, ~150 MB more); 0 keeps none
    warm_states: int = Field(default=10_000, ge=0)
    namespace: str = "segmentflow"
    config: str | None = None
    web_port: int = 6066
    web_host: str = "0.0.0.0"
    api_token: str | None = None
    topic_website_events: str = "website-events"
    topic_email_events: str = "email-events"
    topic_purchase_events: str = "purchase-events"
    topic_segment_changes: str = "segment-changes"
    topic_segmentflow_deadletter: str = "segmentflow-deadletter"
    topic_segmentflow_metrics: str = "segmentflow-metrics"
    # Kafka security pass-through (aiokafka/kafka-python names)
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_sasl_mechanism: str | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: str | None = None
    kafka_ssl_cafile: str | None = None
    worker_id: str | None = None
    partitions: int = 4
    batch_size: int = 2000
    #: seconds a worker batch waits to fill up to ``batch_size`` when fewer records are
    #: buffered (a busy worker finds its next batch full): the latency it adds to a quiet
    #: stream. 0.05 (was 0.2): p99 event-to-change latency 394-699 ms vs 856-1,150 ms at half
    #: the maximum rate, throughput the same within noise (benchmarks/README.md, 2026-12-02)
    batch_within: float = 0.05
    metrics_every: float = 10.0
    #: codec of the records the worker produces: none, gzip, snappy, lz4, zstd (input in any
    #: codec is always read)
    kafka_compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = "none"
    #: seconds after which a partition whose end offset the broker has not reported (empty,
    #: silent) stops holding the event-time clock back
    idle_timeout: float = Field(default=30.0, gt=0)
    #: seconds events may wait for a clock that does not move before ``/health`` says degraded
    clock_alert: float = Field(default=120.0, gt=0)
    #: real partition count of the input topics, read from the broker at worker start (see
    #: ``input_partitions``); not an environment variable
    _input_partitions: int | None = PrivateAttr(default=None)

    @property
    def input_partitions(self) -> int:
        """Partitions of each input topic: the broker's real count once the worker has read
        it (``set_input_partitions``), else ``SEGMENTFLOW_PARTITIONS``."""
        return self._input_partitions or self.partitions

    def set_input_partitions(self, count: int) -> None:
        """Record the input topics' real partition count (read from the broker)."""
        self._input_partitions = count

    def segment_config(self) -> SegmentConfig:
        """Load the YAML config named by ``SEGMENTFLOW_CONFIG`` (defaults when unset)."""
        return load_config(self.config)

    @property
    def input_topics(self) -> dict[str, str]:
        """Input topic name per topic kind."""
        return {
            "website": self.topic_website_events,
            "email": self.topic_email_events,
            "purchase": self.topic_purchase_events,
        }

    @property
    def kafka_bootstrap(self) -> str:
        """``host:port[,host:port]`` from the ``kafka://`` URL."""
        return ",".join(part.split("://", 1)[-1] for part in self.kafka_url.split(","))

    # collector (CONTRACT §9, `segmentflow collect`)
    collector_host: str = "127.0.0.1"
    collector_port: int = 8088
    write_keys: str = ""
    """Accepted Segment write keys, comma-separated (``SEGMENTFLOW_WRITE_KEYS``)."""
    collector_track_map: str | None = None
    """Extra track-name mapping: a JSON object ``{"Track Name": "event_type"}`` or the path of
    a JSON/YAML file holding one (``SEGMENTFLOW_COLLECTOR_TRACK_MAP``)."""
