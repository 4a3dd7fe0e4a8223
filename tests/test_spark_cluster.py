"""The analysis on a real multi-process Spark cluster: a standalone master and one worker started here
from the pyspark distribution (bin/spark-class), the driver in this process, the executor in the
worker's JVM. The cube and the run equal the database's, for a customer and a store pilot."""
from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests import spark_helpers as sh


def _status(ui: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{ui}/json/", timeout=5) as response:
        return json.load(response)


def _wait(what: str, check, processes, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in processes):
            pytest.fail(f"the Spark {what} exited early (its log is in the test's folder)")
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(1)
    pytest.fail(f"the Spark {what} did not come up within {seconds:.0f} s")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A standalone master and a worker (2 cores, 1 GB) on localhost; their URL and web UI port."""
    sh.require_spark()
    import pyspark
    home = Path(pyspark.__file__).parent
    folder = tmp_path_factory.mktemp("spark-cluster")
    env = {**os.environ, "SPARK_HOME": str(home), "SPARK_LOCAL_IP": "127.0.0.1", "SPARK_LOG_DIR": str(folder),
           "SPARK_WORKER_DIR": str(folder / "work")}
    port, ui, worker_ui = sh.free_port(), sh.free_port(), sh.free_port()
    url = f"spark://127.0.0.1:{port}"
    spark_class = str(home / "bin" / "spark-class")
    processes = []

    def start(name: str, *args: str) -> None:
        log = open(folder / f"{name}.log", "wb")
        processes.append(subprocess.Popen([spark_class, *args], env=env, stdout=log, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, start_new_session=True))
        log.close()

    try:
        start("master", "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port),
              "--webui-port", str(ui))
        _wait("master", lambda: _status(ui)["status"] == "ALIVE", processes)
        start("worker", "org.apache.spark.deploy.worker.Worker", url, "--host", "127.0.0.1", "--cores", "2",
              "--memory", "1g", "--webui-port", str(worker_ui), "--work-dir", str(folder / "work"))
        _wait("worker", lambda: _status(ui)["aliveworkers"] == 1, processes)
        yield url, ui
    finally:
        for p in reversed(processes):
            p.terminate()
        for p in processes:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()


@pytest.fixture(scope="module")
def spark(cluster):
    """The driver's session on the cluster: one executor in the worker's JVM."""
    url, _ = cluster
    session = (sh.builder(url).config("spark.executor.memory", "512m").config("spark.cores.max", "2")
               .getOrCreate())
    sh.quiet(session)
    yield session
    session.stop()


@pytest.fixture
def lake_app(app, backend, cluster, spark, tmp_path):
    sh.skip_sqlite_when_postgres(backend)
    app.config.update(SPARK_MASTER=cluster[0], SPARK_TRANSACTIONS=str(tmp_path / "lake.parquet"))
    return app


def test_on_a_standalone_cluster_the_cubes_and_runs_equal_the_database(lake_app, cluster, spark, tmp_path):
    url, ui = cluster
    assert spark.sparkContext.master == url
    customers = sh.customer_pilot(lake_app)
    stores = sh.store_pilot(lake_app)
    sh.write_lake(lake_app, tmp_path / "lake.parquet")
    for key in (customers, stores):
        database, on_spark = sh.cubes(lake_app, key)
        sh.assert_cubes_equal(database, on_spark)
    # the work ran in the worker's executor: the application holds the worker's cores
    apps = _status(ui)["activeapps"]
    assert len(apps) == 1 and apps[0]["cores"] == 2
    on_db, on_cluster = sh.analyse(lake_app, customers, "database"), sh.analyse(lake_app, customers, "spark")
    assert (on_cluster.status, on_cluster.engine) == ("done", "spark"), on_cluster.error
    assert on_cluster.decision == on_db.decision
    sh.assert_close(on_db.recommendation, on_cluster.recommendation)
    sh.assert_close(sh.catalogue_only(on_db.results), sh.catalogue_only(on_cluster.results))
