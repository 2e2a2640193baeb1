"""The worker equals ``replay`` with the ``clv`` dimension refitted weekly (issue 16): the
backlog test of test_worker_vs_replay.py with ``kind: clv`` (refits from 10 customers on) and
``kind: interest`` enabled, so the processor's refit schedule runs in a live worker."""

from __future__ import annotations

from pathlib import Path

import pytest
import test_worker_vs_replay as backlog

pytestmark = pytest.mark.integration

CLV = (
    backlog.RULES
    + """\
dimensions:
  - {kind: clv, refit_min_customers: 10}
  - {kind: interest}
"""
)


def test_backlog_with_clv_refits_equals_replay(
    tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(backlog, "RULES", CLV)
    backlog.test_backlog_catch_up_equals_replay(tmp_path, redis_url)
