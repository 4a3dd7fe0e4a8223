"""Property-based API test: schemathesis finds no server error and no undocumented response, on
every operation of the OpenAPI document, on both databases.

PILOT_FUZZ_EXAMPLES=100 runs the bigger sweep by hand: that many cases per operation (CI runs a few).
"""
import os
from collections import Counter

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import checks

CHECKS = [checks.not_a_server_error, checks.status_code_conformance, checks.content_type_conformance,
          checks.response_schema_conformance]
# SQLite in CI runs more cases than PostgreSQL, where each costs more and the suite's time matters
EXAMPLES = {"sqlite": 20, "postgresql": 10}
SWEEP = int(os.environ.get("PILOT_FUZZ_EXAMPLES") or 0)
METHODS = {"get", "put", "post", "patch", "delete", "head", "options", "trace"}


def _documented_operations(client) -> set[str]:
    """'METHOD /path' of every operation the OpenAPI document describes."""
    paths = client.get("/api/openapi.json").json["paths"]
    return {f"{method.upper()} {path}" for path, item in paths.items() for method in item if method in METHODS}


def test_api_conforms_to_its_openapi_document(app, client, tokens, backend, running):
    """Every operation fuzzed against a running pilot's world (regions, stores, customers, a programme)."""
    headers = {"Authorization": f"Bearer {tokens['admin']}"}
    schema = schemathesis.openapi.from_wsgi("/api/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    called = Counter()
    for operation in operations:
        @given(case=operation.as_strategy())
        @settings(max_examples=SWEEP or EXAMPLES[backend[0]], deadline=None,
                  suppress_health_check=list(HealthCheck), database=None)
        def check(case):
            called[f"{case.method.upper()} {case.path}"] += 1
            case.call_and_validate(headers=headers, checks=CHECKS)

        check()
    assert set(called) == _documented_operations(client)  # each operation of the document, exercised


def test_the_lean_till_path_conforms_too(app, tokens, backend, running):
    """The assignment endpoint fuzzed on PostgreSQL, where the lean till path (pilot.api.fast_assignment) answers
    what it can: no server error, every answer as documented, and some answered by the lean path."""
    if backend[0] != "postgresql":
        pytest.skip("the lean till path acts on PostgreSQL only (set PILOT_TEST_DATABASE_URL)")
    headers = {"Authorization": f"Bearer {tokens['feed']}"}
    schema = schemathesis.openapi.from_wsgi("/api/openapi.json", app)
    operation = schema["/api/v1/pilots/{key}/assignments"]["POST"]

    paths = []

    @given(case=operation.as_strategy())
    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def check(case):
        case.path_parameters = {"key": "p1"}
        answer = case.call_and_validate(headers=headers, checks=CHECKS)
        paths.extend(v for k, vs in answer.headers.items() if k.lower() == "x-pilot-path" for v in vs)

    check()
    assert "fast" in paths
