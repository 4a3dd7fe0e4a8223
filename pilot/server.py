"""gunicorn settings for Pilot (`gunicorn -c python:pilot.server wsgi:app`), as scripts/serve.sh runs it.

Every setting can be overridden by gunicorn's own command-line options or GUNICORN_CMD_ARGS; the
README's Configuration section lists the ones Pilot sets and why.
"""
from __future__ import annotations

import os

bind = f"127.0.0.1:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("PILOT_WORKERS", "2"))
# Threaded workers: the worker's main thread tells the arbiter it is alive whatever a request does, so
# an upload that streams for an hour is not killed as a hung worker (a sync worker is, after `timeout`
# seconds of one request). The app keeps one database session per app context, so threads share none.
worker_class = "gthread"
threads = int(os.environ.get("PILOT_THREADS", "4"))
# with gthread: how long a worker whose main loop stopped answering lives on (not a limit on requests)
timeout = int(os.environ.get("PILOT_WORKER_TIMEOUT", "30"))
logger_class = "pilot.logs.GunicornLogger"  # control characters escaped in gunicorn's lines and the app's
accesslog = "-"
errorlog = "-"
