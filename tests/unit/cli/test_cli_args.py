"""One instant parser for every command (``replay --until``, ``fit-clv --until``, ``preview --at``
/ ``--until``): the same forms accepted, the same message for a bad one, exit code 2 and never a
traceback."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from segmentflow.cli._args import INSTANT_HINT, instant
from segmentflow.cli.main import main

BAD = [
    "yesterday",
    "2026-05-30",
    "2026-05-30T00:00:00",
    "2026-13-01T00:00:00Z",
    "1969-12-31T23:59:59Z",
    "",
]


def test_instant_parses_rfc3339_with_an_offset() -> None:
    assert instant("1970-01-02T00:00:00Z") == 86_400_000_000
    assert instant("1970-01-01T02:00:00+02:00") == 0
    assert instant("1970-01-01T00:00:00.5z") == 500_000


@pytest.mark.parametrize("text", BAD)
def test_a_bad_instant_says_what_to_write(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError) as caught:
        instant(text)
    assert str(caught.value).endswith(INSTANT_HINT)


def commands(tmp_path: Path) -> list[list[str]]:
    """Each command's instant options, with the other arguments valid."""
    events = tmp_path / "events.jsonl"
    events.write_text("")
    out = str(tmp_path / "out.jsonl")
    return [
        ["replay", str(events), "--changes-out", out, "--until"],
        ["fit-clv", str(events), "--until"],
        ["preview", "--when", "orders_90d >= 1", "--no-live", "--at"],
        ["preview", "--when", "orders_90d >= 1", "--no-live", "--history", str(events), "--until"],
    ]


@pytest.mark.parametrize("text", ["next tuesday", "2026-05-30T00:00:00"])
def test_every_command_gives_exit_code_2_and_the_same_message(
    text: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for argv in commands(tmp_path):
        assert main([*argv, text]) == 2
        out, err = capsys.readouterr()
        option = argv[-1]
        assert f"error: argument {option}: " in err and INSTANT_HINT in err, (argv, err)
        assert "Traceback" not in out + err
        assert err.startswith("usage: segmentflow ")
