"""Property-based API test: schemathesis finds no server error and no undocumented response."""
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import checks

from tests.conftest import BACKENDS

CHECKS = [checks.not_a_server_error, checks.status_code_conformance, checks.content_type_conformance,
          checks.response_schema_conformance]


def test_api_conforms_to_its_openapi_document(app, tokens, backend):
    if backend[0] != BACKENDS[0]:
        pytest.skip("fuzzed once, on SQLite; the database layer is covered on both elsewhere")
    headers = {"Authorization": f"Bearer {tokens['admin']}"}
    schema = schemathesis.openapi.from_wsgi("/api/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20
    for operation in operations:
        @given(case=operation.as_strategy())
        @settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case):
            case.call_and_validate(headers=headers, checks=CHECKS)

        check()
