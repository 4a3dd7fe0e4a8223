"""The app of `wsgi.py` plus one bench-only route, for bench/assign.py's floor: the least an HTTP
endpoint that stores one row costs on this stack (Flask, gunicorn, psycopg, a durable commit).

POST /bench/floor with {"customer": id} inserts the id into bench_floor (created by the bench) on a
per-process autocommit connection with a prepared statement: no auth, no validation, no context
read. Never part of the service: gunicorn starts it only when bench/assign.py asks for it.
"""
import os

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
def floor():  # noqa: ANN201
    customer = request.get_json()["customer"]
    row = _connection().execute("INSERT INTO bench_floor (customer) VALUES (%s) ON CONFLICT DO NOTHING RETURNING id",
                                (customer,), prepare=True).fetchone()
    return jsonify(customer=customer, id=row and row[0])
