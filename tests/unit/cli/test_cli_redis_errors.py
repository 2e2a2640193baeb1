"""A Redis or Redis Cluster error in the middle of a CLI command (a node down, CLUSTERDOWN, a
slot not covered) ends it with its message and exit code 3, not a traceback."""

from __future__ import annotations

import pytest
from redis.exceptions import ClusterDownError, SlotNotCoveredError

from segmentflow.cli import main as cli


@pytest.mark.parametrize(
    ("exc", "prefix"),
    [
        (ClusterDownError("CLUSTERDOWN The cluster is down"), "Redis error (retry shortly):"),
        (SlotNotCoveredError('Slot "12" is not covered'), "Redis Cluster error:"),
    ],
)
def test_a_redis_error_mid_command_ends_with_code_3(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    exc: Exception,
    prefix: str,
) -> None:
    def fail(*args: object) -> int:
        raise exc

    monkeypatch.setattr("segmentflow.cli.tail_cmd.run", fail)
    assert cli.main(["tail"]) == 3
    err = capsys.readouterr().err
    assert prefix in err and str(exc) in err
