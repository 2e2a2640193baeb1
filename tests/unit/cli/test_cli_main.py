"""The ``segmentflow`` command's lazy subcommands: ``--help`` lists every command with its help
and imports none of their modules; a command imports only its own module."""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys

import pytest

from segmentflow.cli import main as cli

HEAVY = ("scipy", "cel", "celpy", "river", "numpy", "redis", "faust", "kafka", "aiokafka")


def loaded_after(argv: list[str]) -> tuple[int, str, list[str]]:
    """(exit code, stdout, modules of interest loaded) of ``main(argv)`` in a fresh process."""
    code = (
        "import json, sys\n"
        "from segmentflow.cli.main import main\n"
        "try:\n"
        f"    main({argv!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        "names = [m for m in sys.modules if m.split('.')[0] in %r\n"
        "         or m.startswith('segmentflow.cli.')]\n"
        "print(json.dumps(sorted(names)), file=sys.stderr)\n"
    ) % (HEAVY,)
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    return done.returncode, done.stdout, json.loads(done.stderr.strip().splitlines()[-1])


def test_help_imports_no_command_module_and_no_heavy_library() -> None:
    code, out, loaded = loaded_after(["--help"])
    assert code == 0
    assert [m for m in loaded if m.split(".")[0] in HEAVY] == []
    assert [m for m in loaded if m.endswith("_cmd")] == []
    for _, commands in cli.COMMANDS:
        for name, _ in commands:
            assert name in out


def test_a_command_imports_only_its_own_module() -> None:
    code, out, loaded = loaded_after(["tail", "--help"])
    assert code == 0 and "--dimension" in out
    assert [m for m in loaded if m.endswith("_cmd")] == ["segmentflow.cli.tail_cmd"]
    assert not {"scipy", "cel", "river"} & {m.split(".")[0] for m in loaded}


def test_lazy_help_equals_the_full_parsers_help() -> None:
    """:data:`COMMANDS` names each module's commands, in order, with their own help text."""
    assert cli.parser_for(["--help"]).format_help() == cli.build_parser().format_help()


@pytest.mark.parametrize(
    ("module", "name"), [(m, n) for m, commands in cli.COMMANDS for n, _ in commands]
)
def test_each_command_is_parsed_by_its_module(module: str, name: str) -> None:
    assert cli.chosen_module([name, "--x"]) == module
    parser = cli.parser_for([name])
    sub = importlib.import_module(f"segmentflow.cli.{module}")
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert action.choices[name].get_default("func").__module__ == sub.__name__


def test_no_or_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in ([], ["nope"]):
        assert cli.main(argv) == 2
    assert cli.main(["--help"]) == 0
    assert "invalid choice: 'nope'" in capsys.readouterr().err


def test_expected_errors_name_real_exception_classes() -> None:
    for module, name in cli.EXPECTED_ERRORS:
        cls = getattr(importlib.import_module(module), name)
        assert issubclass(cls, Exception)
        assert cli.expected(cls("x")) == cli.EXPECTED_ERRORS[module, name]


def test_an_expected_error_ends_with_its_message_and_code(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from segmentflow.config import ConfigError

    class Sub(ConfigError):
        pass

    def fail(*args: object) -> int:
        raise Sub("bad rules")

    monkeypatch.setattr("segmentflow.cli.tail_cmd.run", fail)
    assert cli.main(["tail"]) == 2
    assert "configuration error: bad rules" in capsys.readouterr().err
    assert cli.expected(ValueError("x")) is None
