"""Import direction (PLAN.md "Layout"): the domain at the bottom, the store interfaces above
it, the service layer above those, adapters and entry points on top; only the bootstrap (and
the adapters' own package) names a concrete store, and only ``streams/faust_patches.py``
reaches into Faust's and aiokafka's internals. Each module's imports are read with ``ast``
(function-level imports included), so a violation names the module and the import."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from support.packages import module_files

ADAPTER_LIBRARIES = ("redis", "faust", "aiokafka", "kafka", "confluent_kafka", "mode")
CONCRETE_STORES = (
    "segmentflow.state.memory",
    "segmentflow.state.redis_store",
    "segmentflow.state.redis_ranks",
    "segmentflow.state.redis_personas",
)
UPPER_LAYERS = (
    "segmentflow.service",
    "segmentflow.streams",
    "segmentflow.bootstrap",
    "segmentflow.cli",
    "segmentflow.dashboard",
    "segmentflow.collector",
    "segmentflow.triggers",
)
STORE_INTERFACES = (
    "segmentflow.state.base",
    "segmentflow.state.ranks",
    "segmentflow.state.personas",
)
FAUST_INTERNALS = ("faust.transport", "aiokafka.consumer", "aiokafka.structs")


#: known exceptions, each with why it is allowed or who removes it (keep this short)
ALLOWED = {
    # the check suite for dimensions (like river.checks) runs a dimension end to end: through
    # the Processor and replay over a MemoryStore, so it sits above the service layer while it
    # lives next to the dimensions. Kept: injecting the store would not remove the Processor
    # import, and moving the module would change the import path that docs/dimensions.md gives
    # authors of custom dimensions (and 9 test modules use) for no structural gain.
    "segmentflow.segmenters.checks": "test harness",
}


MODULES = dict(module_files())


def imports(module: str) -> set[str]:
    """Every module ``module`` imports (absolute names; ``from a import b`` gives ``a`` and,
    when ``a.b`` is a module, ``a.b``)."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found.update(
                f"{node.module}.{a.name}"
                for a in node.names
                if f"{node.module}.{a.name}" in MODULES
            )
    return found


def under(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def violations(selected: list[str], forbidden: tuple[str, ...]) -> list[str]:
    found = (
        f"{module} imports {name}"
        for module in selected
        if module not in ALLOWED
        for name in imports(module)
        if under(name, forbidden)
    )
    return sorted(v for v in found if v not in ALLOWED)


def test_the_module_walk_finds_the_layers() -> None:
    for expected in (
        "segmentflow.engine.engine",
        "segmentflow.state.base",
        "segmentflow.streams.runtime",
    ):
        assert expected in MODULES


def test_customer_state_is_the_bottom_layer() -> None:
    own = [n for n in imports("segmentflow.engine.state") if under(n, ("segmentflow",))]
    assert own == [], (
        "segmentflow/engine/state.py is bottom-layer data: it imports no segmentflow module"
    )


@pytest.mark.parametrize(
    "package", ["segmentflow.engine", "segmentflow.segmenters", "segmentflow.schemas"]
)
def test_the_domain_imports_no_store_service_or_adapter(package: str) -> None:
    domain = [m for m in MODULES if under(m, (package,))]
    forbidden = ("segmentflow.state", *UPPER_LAYERS, *ADAPTER_LIBRARIES)
    assert violations(domain, forbidden) == []


def test_the_store_interfaces_import_only_domain_data() -> None:
    forbidden = (
        *CONCRETE_STORES,
        *UPPER_LAYERS,
        *ADAPTER_LIBRARIES,
        "segmentflow.engine.engine",
        "segmentflow.config",
    )
    assert violations(list(STORE_INTERFACES), forbidden) == []


def test_the_service_layer_imports_no_adapter() -> None:
    service = [m for m in MODULES if under(m, ("segmentflow.service",))]
    forbidden = (
        *CONCRETE_STORES,
        *ADAPTER_LIBRARIES,
        "segmentflow.streams",
        "segmentflow.bootstrap",
        "segmentflow.cli",
    )
    assert violations(service, forbidden) == []


def test_the_worker_receives_its_stores_from_the_bootstrap() -> None:
    streams = [m for m in MODULES if under(m, ("segmentflow.streams",))]
    assert violations(streams, CONCRETE_STORES) == []


def test_the_cli_asks_the_bootstrap_for_stores() -> None:
    cli = [m for m in MODULES if under(m, ("segmentflow.cli",))]
    assert violations(cli, (*CONCRETE_STORES, "redis")) == []


def test_faust_internals_are_reached_from_one_module() -> None:
    others = [m for m in MODULES if m != "segmentflow.streams.faust_patches"]
    assert violations(others, FAUST_INTERNALS) == []


def test_a_violation_is_reported_by_module_and_import(tmp_path: Path) -> None:
    MODULES["segmentflow.service.fake_for_test"] = tmp_path / "fake.py"
    (tmp_path / "fake.py").write_text(
        "def f():\n    from segmentflow.state.memory import MemoryStore\n"
    )
    try:
        assert violations(["segmentflow.service.fake_for_test"], CONCRETE_STORES) == [
            "segmentflow.service.fake_for_test imports segmentflow.state.memory"
        ]
    finally:
        del MODULES["segmentflow.service.fake_for_test"]
