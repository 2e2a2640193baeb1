"""Where the package's modules live: ``segmentflow`` plus ``schemas/``, ``segmenters/`` and
``streams/`` mapped to ``segmentflow.schemas`` etc. (pyproject's ``package-dir``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: source folder -> package (pyproject ``package-dir``)
FOLDERS = {
    "segmentflow": "segmentflow",
    "schemas": "segmentflow.schemas",
    "segmenters": "segmentflow.segmenters",
    "streams": "segmentflow.streams",
}


def module_files() -> Iterator[tuple[str, Path]]:
    """``(module name, source path)`` of every module of the package, sorted per folder."""
    for folder, package in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            yield ".".join((package, *parts)), path
