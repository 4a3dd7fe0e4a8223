"""The app of `wsgi.py` plus two bench-only routes, for bench/assign.py's floors: the least an HTTP
endpoint that stores one row costs on this stack (Flask, gunicorn, psycopg, a durable commit), and
the till's own SQL with the least Python around it (/bench/till_sql, below).

POST /bench/floor with {"customer": id} inserts the id into bench_floor (created by the bench) on a
per-process autocommit connection with a prepared statement: no auth, no validation, no context
read. Never part of the service: gunicorn starts it only when bench/assign.py asks for it.
"""
import json
import os
from functools import partial

import psycopg
from flask import jsonify, request

from wsgi import app

_connections: dict[int, psycopg.Connection] = {}


def _connection() -> psycopg.Connection:
    conn = _connections.get(os.getpid())
    if conn is None:
        conn = _connections[os.getpid()] = psycopg.connect(os.environ["PILOT_DATABASE_URL"], autocommit=True)
    return conn


@app.post("/bench/floor")
def floor():
    customer = request.get_json()["customer"]
    row = _connection().execute("INSERT INTO bench_floor (customer) VALUES (%s) ON CONFLICT DO NOTHING RETURNING id",
                                (customer,), prepare=True).fetchone()
    return jsonify(customer=customer, id=row and row[0])


# The till's own SQL with the least Python around it, outside Flask as the lean till path is
# (pilot/api.fast_assignment.py): the context query and the create-claim-insert statement, nothing else (no
# validation, no token memory, no reasons). What the prescribed statements cost over HTTP.
from pilot.assignment import AssignmentDb, _create_claim_and_insert, _row, read_context  # noqa: E402
from pilot.auth import hash_token  # noqa: E402
from pilot.bucketing import variant_for  # noqa: E402
from pilot.customers import customer_row  # noqa: E402
from pilot.driver import driver_rows  # noqa: E402


def _till_sql(environ: dict, start_response):
    body = json.loads(environ["wsgi.input"].read(int(environ["CONTENT_LENGTH"])))
    engine = app.extensions["pilot.db"][0]
    pooled = engine.raw_connection()
    driver = pooled.driver_connection
    driver.autocommit = True
    try:
        rows = partial(driver_rows, driver, engine.dialect)
        secret = environ["HTTP_AUTHORIZATION"].partition(" ")[2]
        t = read_context(AssignmentDb(True, rows), hash_token(secret), "card-pilot", body["customer"], body["store"],
                 body["new_customer"]["home_store"])
        variant = variant_for(t.salt, body["customer"], t.allocation)
        won = rows(_create_claim_and_insert(), _row(t, variant, customer_row(body["customer"], {}, t.new_home_id)))
    finally:
        driver.autocommit = False
        pooled.close()
    out = json.dumps({"customer": body["customer"], "variant": won[0][0], "assigned_at": won[0][1].isoformat()}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(out)))])
    return [out]


_inner = app.wsgi_app


def _route(environ: dict, start_response):
    if environ.get("PATH_INFO") == "/bench/till_sql":
        return _till_sql(environ, start_response)
    return _inner(environ, start_response)


app.wsgi_app = _route
