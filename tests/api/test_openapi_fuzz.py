"""schemathesis against the app's own OpenAPI schema: no 5xx, and every response matches the schema."""
from __future__ import annotations

import tempfile
from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (content_type_conformance, response_headers_conformance,
                                               response_schema_conformance,
                                               status_code_conformance)

from autoscaler.api import MemoryStatusSource, create_app
from autoscaler.api.auth import StaticTokenAuth
from autoscaler.overrides import SqliteAuditLog, SqliteOverrideStore
from tests.api.conftest import OPERATOR_TOKEN, START, VIEWER_TOKEN, FakeClock, llama_state

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          response_headers_conformance]
# Not negative_data_rejection: unknown query parameters are ignored, as FastAPI does, not rejected.


def _local_app():
    # Built at import: schemathesis parametrises from a schema object, and its fixture-based loader
    # does not work with this pytest. The database lives for the test process in a temporary folder.
    db = Path(tempfile.mkdtemp(prefix="warmscale-fuzz-")) / "warmscale.db"
    status = MemoryStatusSource()
    status.update(llama_state())
    status.update(llama_state(name="qwen", model="qwen-7b"))
    auth = StaticTokenAuth({OPERATOR_TOKEN: ("alice", "operator"), VIEWER_TOKEN: ("bob", "viewer")})
    return create_app(SqliteOverrideStore(db), SqliteAuditLog(db), status, auth, clock=FakeClock(START))


schema = schemathesis.openapi.from_asgi("/openapi.json", _local_app())


@schema.parametrize()
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_operator_requests_never_5xx_and_match_the_schema(case):
    case.call_and_validate(headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"}, checks=CHECKS)


@schema.parametrize()
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
def test_unauthenticated_and_viewer_requests_match_the_schema(case):
    case.call_and_validate(headers={"Authorization": f"Bearer {VIEWER_TOKEN}"}, checks=CHECKS)
    case.call_and_validate(checks=CHECKS)
