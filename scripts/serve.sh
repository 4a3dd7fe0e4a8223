#!/usr/bin/env bash
# One command from a clone to a running Pilot: venv, install, SQLite demo data, gunicorn on 127.0.0.1:${PORT:-8000}.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh
ensure_venv base
.venv/bin/pilot demo
port=${PORT:-8000}
echo "Pilot is at http://127.0.0.1:$port/ (API docs: http://127.0.0.1:$port/api/docs). Ctrl-C stops it."
# pilot/server.py holds the settings (threaded workers, so a long upload is not taken for a hung worker)
export PORT=$port
# a local server over plain http: the session cookie cannot be Secure there (see PILOT_ENV in the README)
export PILOT_ENV=${PILOT_ENV:-development}
exec .venv/bin/gunicorn -c python:pilot.server wsgi:app
