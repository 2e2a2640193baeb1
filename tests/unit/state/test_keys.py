"""The key names are the stored layout: every one spelled out, so a change shows up here."""

from __future__ import annotations

import ast
import itertools

from support.packages import module_files

from segmentflow.state.keys import Keys
from segmentflow.state.members import segment_key


def test_every_key_name_is_the_stored_one() -> None:
    k = Keys("sf")
    assert {
        "state": k.state("c:1 é"),
        "due": k.due(3),
        "outbox": k.outbox(0),
        "claim": k.claim("c1"),
        "partitions": k.partitions,
        "meta": k.meta,
        "pop": k.pop,
        "quarantine": k.quarantine,
        "alias": k.alias,
        "aliased": k.aliased("c1"),
        "handover": k.handover("c1"),
        "rfm": k.rfm,
        "rfm_log": k.rfm_log,
        "persona_samples": k.persona_samples,
        "persona_model": k.persona_model,
        "persona_version": k.persona_version,
        "clv_rows": k.clv_rows(63),
        "clv_version": k.clv_version,
        "clv_fits": k.clv_fits,
        "clv_ready": k.clv_ready,
        "clv_lock": k.clv_lock,
        "segment": k.segment("rule:vip", "in"),
        "everything": k.everything,
    } == {
        "state": "sf:s:c:1 é",
        "due": "sf:due:3",
        "outbox": "sf:outbox:0",
        "claim": "sf:claim:c1",
        "partitions": "sf:partitions",
        "meta": "sf:meta",
        "pop": "sf:pop",
        "quarantine": "sf:quarantine",
        "alias": "sf:alias",
        "aliased": "sf:aliased:c1",
        "handover": "sf:handover:c1",
        "rfm": "sf:rfm",
        "rfm_log": "sf:rfm:log",
        "persona_samples": "sf:persona:samples",
        "persona_model": "sf:persona:model",
        "persona_version": "sf:persona:version",
        "clv_rows": "sf:clv:rows:63",
        "clv_version": "sf:clv:version",
        "clv_fits": "sf:clv:fits",
        "clv_ready": "sf:clv:ready",
        "clv_lock": "sf:clv:lock",
        "segment": "sf:m:rule:vip\x1fin",
        "everything": "sf:*",
    }


def test_round_trips_of_scanned_keys() -> None:
    k = Keys("ns:with:colons")
    assert k.customer_of(k.state("a:b").encode()) == "a:b"
    assert k.segment_of(k.segment("rule:x", "in").encode()) == ("rule:x", "in")
    assert segment_key("ns:with:colons", "lifecycle", "new") == k.segment("lifecycle", "new")


def _spelled_keys(tree: ast.AST) -> list[int]:
    """Lines of f-strings that build a key from a namespace: ``f"{...namespace}:..."``."""
    lines = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.JoinedStr):
            continue
        parts = node.values
        for value, after in itertools.pairwise(parts):
            expr = value.value if isinstance(value, ast.FormattedValue) else None
            name = (
                expr.id
                if isinstance(expr, ast.Name)
                else expr.attr
                if isinstance(expr, ast.Attribute)
                else None
            )
            if (
                name in {"namespace", "ns"}
                and isinstance(after, ast.Constant)
                and str(after.value).startswith(":")
            ):
                lines.append(node.lineno)
    return lines


def test_no_module_but_keys_spells_a_key_name() -> None:
    found = {
        name: lines
        for name, path in module_files()
        if name != "segmentflow.state.keys"
        and (lines := _spelled_keys(ast.parse(path.read_text(encoding="utf-8"))))
    }
    assert found == {}, "take key names from segmentflow.state.keys.Keys"


def test_the_check_sees_a_spelled_key() -> None:
    tree = ast.parse('a = f"{settings.namespace}:s:{cid}"\nb = f"{ns}:due:{s}"\nc = f"{ns}-x"')
    assert _spelled_keys(tree) == [1, 2]
