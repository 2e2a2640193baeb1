"""The key names are the stored layout: every one spelled out, so a change shows up here."""

from __future__ import annotations

import ast
import itertools
import zlib

from support.packages import module_files

from segmentflow.state.keys import Keys, LegacyKeys
from segmentflow.state.members import segment_key


def test_every_key_name_is_the_stored_one() -> None:
    k = Keys("sf")
    p = k.part(3)
    assert {
        "state": k.state("c:1 é", 3),
        "due": k.due(3),
        "outbox": k.outbox(0),
        "directory": k.directory("c1"),
        "partitions": k.partitions,
        "meta": k.meta,
        "layout": k.layout,
        "span": k.span,
        "pop": p.pop,
        "quarantine": p.quarantine,
        "alias": p.alias,
        "aliased": p.aliased("c1"),
        "handover": p.handover("c1"),
        "rfm": p.rfm,
        "rfm_log": p.rfm_log,
        "persona_samples": k.persona_samples,
        "persona_model": k.persona_model,
        "persona_version": k.persona_version,
        "clv_rows": p.clv_rows(63),
        "clv_version": p.clv_version,
        "clv_fits": k.clv_fits,
        "clv_ready": k.clv_ready,
        "clv_lock": k.clv_lock,
        "segment": k.segment(3, "rule:vip", "in"),
        "chunk_prefix": p.chunk_prefix("rule:vip", "in"),
        "layout2_segment": p.layout2_segment("rule:vip", "in"),
        "everything": k.everything,
    } == {
        "state": "{sf:p3}:s:c:1 é",
        "due": "{sf:p3}:due",
        "outbox": "{sf:p0}:outbox",
        "directory": "{sf:d" + str(zlib.crc32(b"c1") % 16384) + "}",
        "partitions": "sf:partitions",
        "meta": "sf:meta",
        "layout": "sf:layout",
        "span": "sf:span",
        "pop": "{sf:p3}:pop",
        "quarantine": "{sf:p3}:quarantine",
        "alias": "{sf:p3}:alias",
        "aliased": "{sf:p3}:aliased:c1",
        "handover": "{sf:p3}:handover:c1",
        "rfm": "{sf:p3}:rfm",
        "rfm_log": "{sf:p3}:rfm:log",
        "persona_samples": "{sf:persona}:samples",
        "persona_model": "{sf:persona}:model",
        "persona_version": "{sf:persona}:version",
        "clv_rows": "{sf:p3}:clv:rows:63",
        "clv_version": "{sf:p3}:clv:version",
        "clv_fits": "sf:clv:fits",
        "clv_ready": "sf:clv:ready",
        "clv_lock": "sf:clv:lock",
        "segment": "{sf:p3}:mx:rule:vip\x1fin",
        "chunk_prefix": "{sf:p3}:mc:rule:vip\x1fin\x1e",
        "layout2_segment": "{sf:p3}:m:rule:vip\x1fin",
        "everything": ("sf:*", "{sf:*"),
    }


def test_a_partitions_keys_share_one_hash_tag() -> None:
    p = Keys("sf").part(7)
    names = [p.state("x"), p.due, p.outbox, p.pop, p.rfm, p.rfm_log, p.alias, p.aliased("y")]
    names += [p.handover("y"), p.clv_rows(1), p.clv_version, p.segment("d", "v"), p.quarantine]
    names += [p.chunk_prefix("d", "v") + "bound"]
    assert {name.split("}")[0] + "}" for name in names} == {p.tag} == {"{sf:p7}"}


def test_legacy_names_are_layout_1() -> None:
    old = LegacyKeys("sf")
    assert (old.state("c"), old.due(2), old.outbox(1), old.claim("c"), old.pop) == (
        "sf:s:c",
        "sf:due:2",
        "sf:outbox:1",
        "sf:claim:c",
        "sf:pop",
    )
    assert old.segment_of(old.segment("rule:x", "in").encode()) == ("rule:x", "in")


def test_round_trips_of_scanned_keys() -> None:
    k = Keys("ns:with:colons")
    p = k.part(2)
    assert p.customer_of(k.state("a:b", 2).encode()) == "a:b"
    assert p.segment_of(k.segment(2, "rule:x", "in").encode()) == ("rule:x", "in")
    assert segment_key("ns:with:colons", "lifecycle", "new", 2) == k.segment(2, "lifecycle", "new")


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
