"""The triggers YAML file: defaults, strict validation with named errors, env expansion."""

from __future__ import annotations

from pathlib import Path

import pytest

from segmentflow.triggers import DEFAULT_DEADLETTER_TOPIC
from segmentflow.triggers.config import (
    TriggersConfigError,
    load_triggers_config,
    triggers_from_dict,
)

YAML = """\
backoff: {base_s: 0.2, max_s: 5}
targets:
  - name: crm-at-risk
    url: http://127.0.0.1:9/hook
    match: {dimension: lifecycle, from: active, to: at_risk}
  - name: vip
    url: https://example.invalid/vip
    match:
      - {dimension: "rule:vip", to: in}
      - {dimension: rfm, to: [champions, loyal_customers]}
    mode: binary
    rate_limit_per_s: 5
    max_attempts: 3
    headers: {Authorization: "Bearer ${HOOK_TOKEN}"}
    backoff: {base_s: 1, jitter: 0}
"""


def test_load_full_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOOK_TOKEN", "s3cret")
    monkeypatch.delenv("SEGMENTFLOW_TOPIC_SEGMENTFLOW_TRIGGERS_DEADLETTER", raising=False)
    path = tmp_path / "triggers.yaml"
    path.write_text(YAML)
    config = load_triggers_config(path)
    crm, vip = config.targets
    assert crm.mode == "structured" and crm.max_attempts == 5 and crm.rate_limit_per_s == 0
    assert vip.headers == {"Authorization": "Bearer s3cret"}
    assert config.backoff_for(crm).base == 0.2 and config.backoff_for(crm).cap == 5
    assert config.backoff_for(vip).base == 1 and config.backoff_for(vip).jitter == 0
    assert crm.wants(
        {"data": {"dimension": "lifecycle", "previous": "active", "current": "at_risk"}}
    )
    assert vip.wants({"data": {"dimension": "rfm", "previous": None, "current": "champions"}})
    assert vip.wants({"data": {"dimension": "rule:vip", "previous": "out", "current": "in"}})
    assert not vip.wants({"data": {"dimension": "rule:vip", "previous": "in", "current": "out"}})
    assert config.resolved_deadletter_topic() == DEFAULT_DEADLETTER_TOPIC


def test_deadletter_topic_env_beats_file() -> None:
    config = triggers_from_dict({"deadletter_topic": "from-file"}, env={})
    assert config.resolved_deadletter_topic({}) == "from-file"
    env = {"SEGMENTFLOW_TOPIC_SEGMENTFLOW_TRIGGERS_DEADLETTER": "from-env"}
    assert config.resolved_deadletter_topic(env) == "from-env"


@pytest.mark.parametrize(
    ("target", "message"),
    [
        (
            {"name": "a", "url": "http://x", "match": {"dimension": "x"}, "modee": 1},
            "'targets.a.modee'",
        ),
        ({"name": "a", "url": "ftp://x", "match": {"dimension": "x"}}, "targets.a.url"),
        ({"name": "a b", "url": "http://x", "match": {"dimension": "x"}}, "targets.a b.name"),
        (
            {"name": "a", "url": "http://x", "match": {"dimension": "x"}, "mode": "zip"},
            "targets.a.mode",
        ),
        (
            {"name": "a", "url": "http://x", "match": {"dimension": "x"}, "max_attempts": 0},
            "max_attempts",
        ),
        ({"name": "a", "url": "http://x"}, "targets.a.match"),
    ],
)
def test_errors_name_target_and_key(target: dict[str, object], message: str) -> None:
    with pytest.raises(TriggersConfigError) as info:
        triggers_from_dict({"targets": [target]}, env={})
    assert message in str(info.value)


def test_duplicate_names_unknown_top_key_and_unset_variables() -> None:
    same = {"name": "a", "url": "http://x", "match": {"dimension": "x"}}
    with pytest.raises(TriggersConfigError, match="defined twice"):
        triggers_from_dict({"targets": [same, same]}, env={})
    with pytest.raises(TriggersConfigError, match="unknown key 'trigers'"):
        triggers_from_dict({"trigers": []}, env={})
    with pytest.raises(TriggersConfigError, match="NOPE is not set"):
        triggers_from_dict({"targets": [dict(same, headers={"X": "${NOPE}"})]}, env={})


def test_missing_or_bad_files(tmp_path: Path) -> None:
    with pytest.raises(TriggersConfigError, match="SEGMENTFLOW_TRIGGERS_CONFIG"):
        load_triggers_config(None)
    with pytest.raises(TriggersConfigError, match="not found"):
        load_triggers_config(tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(TriggersConfigError, match="mapping"):
        load_triggers_config(bad)
