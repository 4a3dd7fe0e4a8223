#!/usr/bin/env bash
# One command from a clone to a running Pilot: venv, install, SQLite demo data, gunicorn on 127.0.0.1:${PORT:-8000}
# and, beside it, `pilot scheduler` (scheduled analyses, guardrail auto-pause, the stage calendar).
# Ctrl-C (or either process ending) stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh
ensure_venv base
.venv/bin/pilot demo
port=${PORT:-8000}
echo "Pilot is at http://127.0.0.1:$port/ (API docs: http://127.0.0.1:$port/api/docs), with the scheduler beside it." \
  "Ctrl-C stops both."
# pilot/server.py holds the settings (threaded workers, so a long upload is not taken for a hung worker)
export PORT=$port
# a local server over plain http: the session cookie cannot be Secure there (see PILOT_ENV in the README)
export PILOT_ENV=${PILOT_ENV:-development}
.venv/bin/gunicorn -c python:pilot.server wsgi:app &
web=$!
.venv/bin/pilot scheduler &
scheduler=$!
stop() {
  trap - INT TERM EXIT
  kill -TERM "$web" "$scheduler" 2>/dev/null || true
  wait "$web" "$scheduler" 2>/dev/null || true
}
trap stop INT TERM EXIT
# whichever ends first (Ctrl-C, a crash) ends the other too
status=0
wait -n "$web" "$scheduler" || status=$?
stop
exit "$status"
