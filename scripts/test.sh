#!/usr/bin/env bash
# One command for the whole test suite (SQLite always; PostgreSQL too when PILOT_TEST_DATABASE_URL is set).
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh
ensure_venv test || exit 1
# lint first: a finding fails the run before any test (configuration in pyproject.toml)
.venv/bin/ruff check . || exit 1
.venv/bin/python -m pytest "$@"
rc=$?
if [ "$rc" -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi
exit "$rc"
