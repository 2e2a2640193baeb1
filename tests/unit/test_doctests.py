"""Every docstring Example of the package runs here (the equivalent of ``--doctest-modules`` for
a package whose sub-packages live in other folders: ``schemas/`` is ``segmentflow.schemas``...).

A module is collected when its source contains ``>>>``; each docstring with examples is one test.
"""

from __future__ import annotations

import doctest
import importlib
import io
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: source folder -> import name (pyproject's ``package-dir``)
PACKAGES = {
    "segmentflow": "segmentflow",
    "schemas": "segmentflow.schemas",
    "segmenters": "segmentflow.segmenters",
    "streams": "segmentflow.streams",
}


def _modules() -> list[str]:
    names: list[str] = []
    for folder, package in PACKAGES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            if ">>>" not in path.read_text(encoding="utf-8"):
                continue
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            names.append(".".join((package, *parts)))
    return names


def _doctests() -> list[doctest.DocTest]:
    finder = doctest.DocTestFinder()
    found: list[doctest.DocTest] = []
    for name in _modules():
        module = importlib.import_module(name)
        found.extend(t for t in finder.find(module, name) if t.examples)
    return sorted(found, key=lambda t: t.name)


DOCTESTS = _doctests()


@pytest.mark.parametrize("test", DOCTESTS, ids=[t.name for t in DOCTESTS])
def test_docstring_examples(test: doctest.DocTest) -> None:
    out = io.StringIO()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    result = runner.run(test, out=out.write, clear_globs=True)
    assert result.failed == 0, out.getvalue()


def test_examples_are_collected() -> None:
    """The scan finds the packages' examples (a broken scan must not pass as "no failures")."""
    modules = {t.name.rsplit(".", 1)[0] for t in DOCTESTS}
    assert len(DOCTESTS) >= 28, [t.name for t in DOCTESTS]
    assert any(m.startswith("segmentflow.schemas") for m in modules)
    assert any(m.startswith("segmentflow.segmenters") for m in modules)
