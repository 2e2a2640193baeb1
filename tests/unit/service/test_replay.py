"""`segmentflow replay` (CONTRACT §5): deterministic output, errors naming the line, and the CLI
in-process and as a process."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from segmentflow.bootstrap import replay_events, replay_file
from segmentflow.cli.main import main
from segmentflow.config import config_from_dict
from segmentflow.service.replay import ReplayError
from segmentflow.synthetic import generate, write_jsonl

START = datetime(2026, 1, 1, tzinfo=UTC)
NO_RFM = {"enabled": False}  # RFM has its own tests
RULES = [
    {"name": "repeat_buyer", "when": "orders_30d >= 2"},
    {"name": "idle", "when": "days_since_last_seen >= 14"},
    {"name": "de", "when": 'traits.country == "DE"'},
]


def rfc(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def order(eid: str, cid: str, at: datetime, revenue: str = "10.00") -> dict[str, Any]:
    return {
        "event_id": eid,
        "customer_id": cid,
        "type": "order_completed",
        "timestamp": rfc(at),
        "properties": {"order_id": f"o-{eid}", "revenue": revenue, "currency": "EUR"},
    }


def page_view(eid: str, cid: str, at: datetime) -> dict[str, Any]:
    return {
        "event_id": eid,
        "customer_id": cid,
        "type": "page_view",
        "timestamp": rfc(at),
        "properties": {"url": "/"},
    }


def write_lines(path: Path, rows: list[dict[str, Any] | bytes]) -> Path:
    with path.open("wb") as fh:
        for row in rows:
            fh.write(row if isinstance(row, bytes) else orjson.dumps(row))
            fh.write(b"\n")
    return path


def lifecycle_of_one_order() -> list[tuple[str | None, str, str, str | None]]:
    """(previous, current, time, cause event) a single order at START goes through (§3)."""
    return [
        (None, "new", rfc(START), "e1"),
        ("new", "active", rfc(START + timedelta(days=30)), None),
        ("active", "at_risk", rfc(START + timedelta(days=90)), None),
        ("at_risk", "churned", rfc(START + timedelta(days=180)), None),
    ]


def read_changes(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def brief(changes: list[dict[str, Any]]) -> list[tuple[str | None, str, str, str | None]]:
    return [
        (
            c["data"]["previous"],
            c["data"]["current"],
            c["time"],
            c["data"]["cause"]["event_id"],
        )
        for c in changes
    ]


@pytest.fixture
def synthetic_file(tmp_path: Path) -> Path:
    messages = generate(customers=60, seed=5, start=START, days=90, scale=0.5, duplicate_ratio=0.02)
    path = tmp_path / "events.jsonl"
    assert write_jsonl(messages, path, include_duplicates=True) > 500
    return path


@pytest.fixture(autouse=True)
def _wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    # rich wraps at the terminal width; keep messages on one line for the asserts
    monkeypatch.setenv("COLUMNS", "400")
    monkeypatch.delenv("SEGMENTFLOW_CONFIG", raising=False)


# --------------------------------------------------------------------------- library
def test_replay_file_is_deterministic(synthetic_file: Path, tmp_path: Path) -> None:
    config = config_from_dict({"rules": RULES, "rfm": NO_RFM})
    until = int((START + timedelta(days=400)).timestamp()) * 1_000_000
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    _, summary_a = replay_file(synthetic_file, config, until, first)
    _, summary_b = replay_file(
        synthetic_file, config_from_dict({"rules": RULES, "rfm": NO_RFM}), until, second
    )
    assert first.read_bytes() == second.read_bytes()
    assert summary_a == summary_b
    assert summary_a.duplicates > 0  # the re-sends were applied once
    changes = read_changes(first)
    assert len(changes) == summary_a.changes > 100
    dims = {c["data"]["dimension"] for c in changes}
    assert {"lifecycle", "rule:repeat_buyer", "rule:idle"} <= dims
    # per customer and dimension: sequences 1, 2, 3, ... and ids match
    seen: dict[tuple[str, str], int] = {}
    for c in changes:
        key = (c["data"]["customer_id"], c["data"]["dimension"])
        seen[key] = seen.get(key, 0) + 1
        assert c["data"]["sequence"] == seen[key]
        assert c["id"] == f"{key[0]}/{key[1]}/{seen[key]}"


def test_replay_until_stops_time_and_skips_later_events(tmp_path: Path) -> None:
    source = write_lines(
        tmp_path / "in.jsonl",
        [order("e1", "c-1", START), page_view("e2", "c-1", START + timedelta(days=100))],
    )
    out = tmp_path / "out.jsonl"
    until = int((START + timedelta(days=95)).timestamp()) * 1_000_000
    _, summary = replay_file(source, config_from_dict({"rfm": NO_RFM}), until, out)
    assert brief(read_changes(out)) == lifecycle_of_one_order()[:3]
    assert summary.skipped_after_until == 1 and summary.events == 1


def test_replay_events_matches_replay_file(tmp_path: Path) -> None:
    rows = [order("e1", "c-1", START), page_view("e2", "c-2", START + timedelta(hours=1))]
    config = config_from_dict({"rfm": NO_RFM})
    until = int((START + timedelta(days=365)).timestamp()) * 1_000_000
    out = tmp_path / "out.jsonl"
    replay_file(write_lines(tmp_path / "in.jsonl", list(rows)), config, until, out)
    assert replay_events(rows, config, until) == read_changes(out)


def test_unsorted_file_names_the_line(tmp_path: Path) -> None:
    source = write_lines(
        tmp_path / "in.jsonl",
        [
            page_view("e1", "c-1", START),
            page_view("e2", "c-2", START + timedelta(hours=2)),
            page_view("e3", "c-1", START + timedelta(hours=1)),
        ],
    )
    with pytest.raises(ReplayError) as info:
        replay_file(source, config_from_dict({"rfm": NO_RFM}), None, tmp_path / "out.jsonl")
    assert f"{source}:3:" in str(info.value) and "sorted" in str(info.value)


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (b'{"event_id": "e2", ', "invalid_json"),
        (b"[1, 2]", "not_an_object"),
        (
            orjson.dumps(page_view("e2", "c-1", START) | {"timestamp": "2026-01-01T00:00:00"}),
            "naive",
        ),
    ],
)
def test_malformed_line_names_the_line(tmp_path: Path, bad: bytes, reason: str) -> None:
    source = write_lines(
        tmp_path / "in.jsonl",
        [page_view("e1", "c-1", START), b"", bad, page_view("e3", "c-1", START)],
    )
    with pytest.raises(ReplayError) as info:
        replay_file(source, config_from_dict({"rfm": NO_RFM}), None, tmp_path / "out.jsonl")
    assert f"{source}:3:" in str(info.value) and reason in str(info.value)


# --------------------------------------------------------------------------- CLI in-process
def test_cli_replay_writes_expected_changes(tmp_path: Path) -> None:
    source = write_lines(tmp_path / "in.jsonl", [order("e1", "c-1", START)])
    out = tmp_path / "changes.jsonl"
    until = rfc(START + timedelta(days=365))
    code = main(["replay", str(source), "--until", until, "--changes-out", str(out), "--quiet"])
    assert code == 0
    everything = read_changes(out)
    changes = [c for c in everything if c["data"]["dimension"] == "lifecycle"]
    # RFM is on by default: a population of one has nobody strictly worse -> R=F=1
    rfm = [c["data"]["current"] for c in everything if c["data"]["dimension"] == "rfm"]
    assert rfm == ["hibernating"]
    assert brief(changes) == lifecycle_of_one_order()
    assert [c["id"] for c in changes] == [f"c-1/lifecycle/{n}" for n in range(1, 5)]
    assert all(c["type"] == "segmentflow.segment.changed" for c in changes)


def test_cli_replay_with_config_rules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "segments.yaml"
    config.write_text(
        "lifecycle: {new_days: 2}\nrfm: {enabled: false}\npersona: {enabled: false}\n"
        "rules:\n  - name: buyer\n    when: 'orders >= 1'\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("SEGMENTFLOW_CONFIG", str(config))
    source = write_lines(tmp_path / "in.jsonl", [order("e1", "c-1", START)])
    out = tmp_path / "changes.jsonl"
    until = rfc(START + timedelta(days=3))
    assert main(["replay", str(source), "--until", until, "--changes-out", str(out)]) == 0
    assert [
        (c["data"]["dimension"], c["data"]["current"], c["time"]) for c in read_changes(out)
    ] == [
        ("lifecycle", "new", rfc(START)),
        ("rule:buyer", "in", rfc(START)),
        ("lifecycle", "active", rfc(START + timedelta(days=2))),
    ]


def test_cli_replay_bad_input_exits_2_naming_the_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write_lines(tmp_path / "in.jsonl", [page_view("e1", "c-1", START), b"{oops"])
    code = main(["replay", str(source), "--changes-out", str(tmp_path / "o.jsonl"), "--quiet"])
    captured = capsys.readouterr()
    assert code == 2
    assert f"{source}:2:" in captured.err and "invalid_json" in captured.err
    assert "Traceback" not in captured.err + captured.out


def test_cli_replay_missing_file_and_bad_until_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = str(tmp_path / "o.jsonl")
    assert main(["replay", str(tmp_path / "nope.jsonl"), "--changes-out", out]) == 2
    assert "nope.jsonl" in "".join(capsys.readouterr())
    source = write_lines(tmp_path / "in.jsonl", [page_view("e1", "c-1", START)])
    assert main(["replay", str(source), "--until", "next tuesday", "--changes-out", out]) == 2
    assert "--until" in "".join(capsys.readouterr())


def test_cli_broken_rule_in_config_names_the_rule(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "segments.yaml"
    config.write_text(
        "rules:\n  - name: ok_rule\n    when: 'orders >= 1'\n"
        "  - name: broken_rule\n    when: 'orders >='\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("SEGMENTFLOW_CONFIG", str(config))
    source = write_lines(tmp_path / "in.jsonl", [page_view("e1", "c-1", START)])
    out = tmp_path / "o.jsonl"
    assert main(["replay", str(source), "--changes-out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "broken_rule" in err and "ok_rule" not in err
    assert "Traceback" not in err


def test_cli_unknown_config_key_names_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "segments.yaml"
    config.write_text("lifecycle:\n  new_dayz: 3\n", encoding="utf-8")
    monkeypatch.setenv("SEGMENTFLOW_CONFIG", str(config))
    source = write_lines(tmp_path / "in.jsonl", [page_view("e1", "c-1", START)])
    assert main(["replay", str(source), "--changes-out", str(tmp_path / "o.jsonl")]) == 2
    assert "new_dayz" in capsys.readouterr().err


# --------------------------------------------------------------------------- CLI as a process
def _console_script() -> Path:
    script = Path(sys.executable).parent / "segmentflow"
    if not script.exists():
        pytest.skip("segmentflow console script not installed in this environment")
    return script


def test_cli_subprocess_replay_and_config_error(synthetic_file: Path, tmp_path: Path) -> None:
    script = _console_script()
    env = {k: v for k, v in os.environ.items() if k != "SEGMENTFLOW_CONFIG"} | {"COLUMNS": "400"}
    out = tmp_path / "process.jsonl"
    until = rfc(START + timedelta(days=200))
    rules = tmp_path / "rules.yaml"
    rules.write_bytes(orjson.dumps({"rules": RULES, "rfm": NO_RFM}))  # JSON is YAML
    done = subprocess.run(
        [script, "replay", synthetic_file, "--until", until, "--changes-out", out, "--quiet"],
        env=env | {"SEGMENTFLOW_CONFIG": str(rules), "PYTHONHASHSEED": "12345"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    in_process = tmp_path / "in_process.jsonl"
    until_us = int((START + timedelta(days=200)).timestamp()) * 1_000_000
    replay_file(
        synthetic_file, config_from_dict({"rules": RULES, "rfm": NO_RFM}), until_us, in_process
    )
    assert out.read_bytes() == in_process.read_bytes() and out.stat().st_size > 0

    config = tmp_path / "segments.yaml"
    config.write_text("rules:\n  - name: no_such_var\n    when: 'wibble > 1'\n", encoding="utf-8")
    done = subprocess.run(
        [script, "replay", synthetic_file, "--changes-out", tmp_path / "x.jsonl"],
        env=env | {"SEGMENTFLOW_CONFIG": str(config)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "no_such_var" in done.stderr and "wibble" in done.stderr
    assert "Traceback" not in done.stderr


def test_long_lived_replay_same_changes_and_collector_restored(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``run(long_lived=True)`` (the CLI's): the collector off, a collection and a freeze every
    few events, handed back at the end; the same changes as a plain run."""
    import gc

    from segmentflow.schemas.changes import Change
    from segmentflow.schemas.decode import Limits
    from segmentflow.service import replay as replay_module
    from segmentflow.service.replay import events_from_dicts, run
    from segmentflow.state.memory import MemoryStore

    monkeypatch.setattr(replay_module, "COLLECT_EVERY", 1000)  # a step after every batch
    events = [orjson.loads(m.value) for m in generate(60, 5, START, 60)]
    config = config_from_dict({})
    outputs = []
    freezes: list[int] = []
    freeze = gc.freeze

    def counted() -> None:
        freezes.append(1)
        freeze()

    monkeypatch.setattr(gc, "freeze", counted)
    for long_lived in (False, True):
        seen: list[Change] = []
        limits = Limits.of(config)
        run(events_from_dicts(events, limits), config, None, seen.append, MemoryStore(), long_lived)
        outputs.append([c.to_json() for c in seen])
        assert gc.isenabled() and gc.get_freeze_count() == 0
    assert len(events) > 2000 and len(freezes) >= 2
    assert outputs[0] == outputs[1] and outputs[0]
