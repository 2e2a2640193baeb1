"""The triggers config file (``SEGMENTFLOW_TRIGGERS_CONFIG``, YAML), validated strictly.

```yaml
deadletter_topic: segmentflow-triggers-deadletter   # optional
backoff: {base_s: 0.5, factor: 2, max_s: 30, jitter: 0.2}
targets:
  - name: crm-at-risk
    url: https://crm.example.com/hooks/segmentflow
    match: {dimension: lifecycle, to: at_risk}    # or a list of such clauses (any matches)
    mode: structured                               # or binary
    rate_limit_per_s: 5                            # 0 = unlimited
    max_attempts: 6
    headers: {Authorization: "Bearer ${CRM_TOKEN}"}  # ${VAR} from the environment
```

An unknown key, a duplicate target name, a bad URL or an unset ``${VAR}`` stops start-up with a
:class:`TriggersConfigError` naming the target and key.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from segmentflow.config import read_yaml_mapping, unique_names
from segmentflow.triggers import DEFAULT_DEADLETTER_TOPIC
from segmentflow.triggers.backoff import Backoff
from segmentflow.triggers.matching import Match

_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class TriggersConfigError(ValueError):
    """The triggers config is invalid; the message names the target and key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class MatchConfig(_Strict):
    """``{dimension, from?, to?}``; see :mod:`segmentflow.triggers.matching`."""

    dimension: str = Field(min_length=1)
    from_: str | list[str | None] | None = Field(default=None, alias="from")
    to: str | list[str | None] | None = None

    def compile(self) -> Match:
        return Match.build(self.dimension, self.from_, self.to)


class BackoffConfig(_Strict):
    """Retry schedule (seconds)."""

    base_s: float = Field(default=0.5, gt=0)
    factor: float = Field(default=2.0, ge=1)
    max_s: float = Field(default=30.0, gt=0)
    jitter: float = Field(default=0.2, ge=0, le=1)

    def build(self) -> Backoff:
        return Backoff(base=self.base_s, factor=self.factor, cap=self.max_s, jitter=self.jitter)


class TargetConfig(_Strict):
    """One webhook target."""

    name: str
    url: str
    match: MatchConfig | list[MatchConfig]
    mode: Literal["structured", "binary"] = "structured"
    rate_limit_per_s: float = Field(default=0, ge=0)
    burst: float = Field(default=1, ge=1)
    max_attempts: int = Field(default=5, ge=1, le=100)
    timeout_s: float = Field(default=10, gt=0)
    max_in_flight: int = Field(default=4, ge=1, le=256)
    retry_on_4xx: bool = False
    headers: dict[str, str] = Field(default_factory=dict)
    backoff: BackoffConfig | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(f"target name {value!r} must match [A-Za-z0-9_.-]{{1,100}}")
        return value

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"url {value!r} must start with http:// or https://")
        return value

    @property
    def matches(self) -> list[Match]:
        clauses = self.match if isinstance(self.match, list) else [self.match]
        return [clause.compile() for clause in clauses]

    def wants(self, change: dict[str, Any]) -> bool:
        """Whether any match clause accepts ``change``."""
        return any(m.matches(change) for m in self.matches)


class TriggersConfig(_Strict):
    """The whole file."""

    targets: list[TargetConfig] = Field(default_factory=list)
    deadletter_topic: str | None = None
    backoff: BackoffConfig = Field(default_factory=lambda: BackoffConfig())

    @field_validator("targets")
    @classmethod
    def _unique(cls, targets: list[TargetConfig]) -> list[TargetConfig]:
        return unique_names(targets, "target")

    def backoff_for(self, target: TargetConfig) -> Backoff:
        return (target.backoff or self.backoff).build()

    def resolved_deadletter_topic(self, env: dict[str, str] | None = None) -> str:
        """Env ``SEGMENTFLOW_TOPIC_SEGMENTFLOW_TRIGGERS_DEADLETTER`` > file > default."""
        environ = os.environ if env is None else env
        return (
            environ.get("SEGMENTFLOW_TOPIC_SEGMENTFLOW_TRIGGERS_DEADLETTER")
            or self.deadletter_topic
            or DEFAULT_DEADLETTER_TOPIC
        )


def _expand(value: Any, where: str, env: dict[str, str]) -> Any:
    if isinstance(value, str):

        def sub(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in env:
                raise TriggersConfigError(f"{where}: environment variable {name} is not set")
            return env[name]

        return _VAR.sub(sub, value)
    if isinstance(value, dict):
        return {k: _expand(v, f"{where}.{k}", env) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, f"{where}[{i}]", env) for i, v in enumerate(value)]
    return value


def _describe(error: ValidationError, data: dict[str, Any]) -> str:
    parts = []
    raw_targets = data.get("targets")
    targets: list[Any] = raw_targets if isinstance(raw_targets, list) else []
    for item in error.errors():
        loc = list(item["loc"])
        if len(loc) >= 2 and loc[0] == "targets" and isinstance(loc[1], int):
            index = loc[1]
            raw = targets[index] if index < len(targets) else None
            name = raw.get("name") if isinstance(raw, dict) else None
            loc[1] = f"{name}" if name else f"#{index}"
        where = ".".join(str(p) for p in loc) or "(top level)"
        if item["type"] == "extra_forbidden":
            parts.append(f"unknown key {where!r}")
        else:
            parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)


def triggers_from_dict(
    data: dict[str, Any] | None, source: str = "triggers config", env: dict[str, str] | None = None
) -> TriggersConfig:
    """Validate a mapping (``${VAR}`` expanded in target headers)."""
    data = dict(data or {})
    environ = dict(os.environ) if env is None else env
    targets = data.get("targets")
    if isinstance(targets, list):
        data["targets"] = [
            {**t, "headers": _expand(t["headers"], f"{source}: {t.get('name')}.headers", environ)}
            if isinstance(t, dict) and isinstance(t.get("headers"), dict)
            else t
            for t in targets
        ]
    try:
        return TriggersConfig.model_validate(data)
    except ValidationError as exc:
        raise TriggersConfigError(f"{source}: {_describe(exc, data)}") from None


def load_triggers_config(path: str | Path | None) -> TriggersConfig:
    """Load the YAML file at ``path`` (``SEGMENTFLOW_TRIGGERS_CONFIG``)."""
    if path is None or str(path) == "":
        raise TriggersConfigError(
            "no triggers config: set SEGMENTFLOW_TRIGGERS_CONFIG to a YAML file with `targets:`"
        )
    file = Path(path)
    if not file.is_file():
        raise TriggersConfigError(f"triggers config {str(file)!r} not found")
    data = read_yaml_mapping(file, TriggersConfigError, "a mapping with `targets:`")
    return triggers_from_dict(data, str(file))
