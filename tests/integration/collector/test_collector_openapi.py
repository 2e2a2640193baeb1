"""Property-based API testing of the running collector against its OpenAPI description:
schema-valid requests are accepted, invalid ones get a documented 4xx, responses match.

The schema is loaded from the module (it must be known when tests are collected, before the
collector runs) and the first test checks that the running collector serves the same document.
(schemathesis's lazy ``from_fixture`` loader does not work with pytest 9.)
"""

from __future__ import annotations

from typing import Any

import pytest
import requests
import schemathesis
from collector_harness import Collector
from hypothesis import HealthCheck, settings

from segmentflow.collector.openapi import openapi_document

pytestmark = pytest.mark.integration

schema = schemathesis.openapi.from_dict(openapi_document())


def test_served_document_is_the_tested_one(collector: Collector) -> None:
    served = requests.get(f"{collector.url}/openapi.json", timeout=5).json()
    assert served == openapi_document()


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_collector_conforms_to_its_openapi(case: Any, collector: Collector) -> None:
    case.call_and_validate(base_url=collector.url, headers=collector.auth)
