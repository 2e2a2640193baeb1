"""Every docstring Example of the package runs here (the equivalent of ``--doctest-modules`` for
a package whose sub-packages live in other folders: ``schemas/`` is ``segmentflow.schemas``...).

A module is collected when its source contains ``>>>``; each docstring with examples is one test.
"""

from __future__ import annotations

import doctest
import importlib
import io

import pytest
from support.packages import module_files


def _modules() -> list[str]:
    return [name for name, path in module_files() if ">>>" in path.read_text(encoding="utf-8")]


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
