"""Property-based API test: schemathesis finds no server error and no undocumented response."""
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import checks

from tests.conftest import BACKENDS
from tests.test_assignment import running  # noqa: F401  (fixture)
from tests.test_pilots import world  # noqa: F401  (fixture)

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


def test_the_lean_till_path_conforms_too(app, tokens, backend, running):  # noqa: F811
    """The assignment endpoint fuzzed on PostgreSQL, where the lean till path (pilot.till) answers
    what it can: no server error, every answer as documented, and some answered by the lean path."""
    if backend[0] != "postgresql":
        pytest.skip("the lean till path acts on PostgreSQL only (set PILOT_TEST_DATABASE_URL)")
    headers = {"Authorization": f"Bearer {tokens['feed']}"}
    schema = schemathesis.openapi.from_wsgi("/api/openapi.json", app)
    operation = schema["/api/v1/pilots/{key}/assignments"]["POST"]

    @given(case=operation.as_strategy())
    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def check(case):
        case.path_parameters = {"key": "p1"}
        case.call_and_validate(headers=headers, checks=CHECKS)

    check()
    assert app.wsgi_app.answered > 0
