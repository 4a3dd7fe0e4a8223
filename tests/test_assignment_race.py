"""Several processes assigning the same customers at once: one stored row each, one answer."""
import multiprocessing as mp

import pytest
from sqlalchemy import func, select

from pilot.db import db
from pilot.models import Assignment, LayerMembership
from tests.test_assignment import running  # noqa: F401  (fixture)
from tests.test_pilots import world  # noqa: F401  (fixture)

WORKERS = 6


def _worker(url, secret, customers, barrier, out):
    from pilot import create_app
    client = create_app({"DATABASE_URL": url, "AUTO_MIGRATE": False, "TESTING": True}).test_client()
    barrier.wait()
    answers = {}
    for c in customers:
        r = client.post("/api/v1/pilots/p1/assignments", json={"customer": c}, headers={"Authorization": f"Bearer {secret}"})
        answers[c] = (r.status_code, (r.json.get("variant") or {}).get("key"))
    out.put(answers)


def test_concurrent_processes_store_one_row_and_agree(app, backend, running, tokens):  # noqa: F811
    if backend[0] != "postgresql":
        pytest.skip("races are checked against PostgreSQL (set PILOT_TEST_DATABASE_URL)")
    customers = [f"c{i}" for i in range(0, 60, 3)]  # home stores in region ra, enrolled
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(WORKERS), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(app.config["DATABASE_URL"], tokens["feed"],
                                                 customers[::-1] if i % 2 else customers, barrier, out))
             for i in range(WORKERS)]
    for p in procs:
        p.start()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    for c in customers:
        answers = {r[c] for r in results}
        assert len(answers) == 1 and next(iter(answers))[0] == 200 and next(iter(answers))[1], (c, answers)
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Assignment)) == len(customers)
        assert db.session.scalar(select(func.count()).select_from(LayerMembership)) == len(customers)
