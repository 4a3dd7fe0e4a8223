"""The analysis through Spark Connect (PILOT_SPARK_REMOTE): a real Spark Connect server started here
from the pyspark distribution (its SparkConnectServer, `local[2]` in its own JVM), this process only a
gRPC client. The cube and the run equal the database's, for a customer and a store pilot; a server
that goes away ends the run `failed` with a clear message and changes nothing else."""
from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests import spark_helpers as sh


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _require_connect_client() -> None:
    try:
        import grpc  # noqa: F401
        import pyspark.sql.connect.session  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"the Spark Connect client is not installed ({exc.name}): pip install -e \".[spark]\"")


@pytest.fixture(scope="module")
def connect_server(tmp_path_factory):
    """A Spark Connect server on a free localhost port; its sc:// URL and its process."""
    sh.require_spark()
    _require_connect_client()
    import pyspark
    home = Path(pyspark.__file__).parent
    if not list((home / "jars").glob("spark-connect_*.jar")):
        pytest.skip("this pyspark distribution has no Spark Connect server jar")
    folder = tmp_path_factory.mktemp("spark-connect")
    port = sh.free_port()
    env = {**os.environ, "SPARK_HOME": str(home), "SPARK_LOCAL_IP": "127.0.0.1"}
    log = open(folder / "server.log", "wb")
    server = subprocess.Popen(
        [str(home / "bin" / "spark-submit"), "--class", "org.apache.spark.sql.connect.service.SparkConnectServer",
         "--master", "local[2]", "--conf", f"spark.connect.grpc.binding.port={port}",
         "--conf", "spark.ui.enabled=false", "--conf", "spark.sql.shuffle.partitions=4",
         "--conf", "spark.driver.host=127.0.0.1", "spark-internal"],
        env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    log.close()
    try:
        deadline = time.monotonic() + 120
        while not _listening(port):
            if server.poll() is not None:
                pytest.fail(f"the Spark Connect server exited early; its log: {folder / 'server.log'}")
            if time.monotonic() > deadline:
                pytest.fail("the Spark Connect server did not listen within 120 s")
            time.sleep(1)
        yield f"sc://127.0.0.1:{port}", server
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()


@pytest.fixture
def remote_app(app, backend, connect_server, tmp_path):
    sh.skip_sqlite_when_postgres(backend)
    app.config.update(SPARK_REMOTE=connect_server[0], SPARK_MASTER=None,
                      SPARK_TRANSACTIONS=str(tmp_path / "lake.parquet"))
    return app


def test_through_spark_connect_the_cubes_and_runs_equal_the_database(remote_app, tmp_path):
    customers = sh.customer_pilot(remote_app)
    stores = sh.store_pilot(remote_app)
    sh.write_lake(remote_app, tmp_path / "lake.parquet")
    for key in (customers, stores):
        database, on_spark = sh.cubes(remote_app, key)
        assert sh.assert_cubes_equal(database, on_spark) > 0
    on_db, remote = sh.analyse(remote_app, customers, "database"), sh.analyse(remote_app, customers, "spark")
    assert (remote.status, remote.engine) == ("done", "spark"), remote.error
    assert remote.decision == on_db.decision
    sh.assert_close(on_db.recommendation, remote.recommendation)
    sh.assert_close(sh.catalogue_only(on_db.results), sh.catalogue_only(remote.results))


def test_a_connect_url_nobody_answers_ends_the_run_failed_with_the_url(app, backend, tmp_path):
    sh.require_spark()
    _require_connect_client()
    sh.skip_sqlite_when_postgres(backend)
    port = sh.free_port()  # nothing listens there
    app.config.update(SPARK_REMOTE=f"sc://127.0.0.1:{port}", SPARK_TRANSACTIONS=str(tmp_path / "lake.parquet"))
    key = sh.customer_pilot(app)
    run = sh.analyse(app, key, "spark")
    assert run.status == "failed"
    assert f"127.0.0.1:{port}" in run.error and "Spark" in run.error


def test_very_large_facts_go_through_parquet_files_that_the_run_removes(remote_app, tmp_path, monkeypatch):
    """With PILOT_SPARK_FACTS, facts past the row threshold are written as Parquet there and read by
    the server from there (not sent over gRPC); the cube is the same and the run's folder is gone after."""
    from pilot import spark_facts
    facts = tmp_path / "facts"
    facts.mkdir()
    remote_app.config.update(SPARK_FACTS=str(facts), SPARK_FACTS_MIN_ROWS=1)
    written: list[str] = []
    real_write = spark_facts.FactsFolder.write

    def recording_write(self, name, table):
        location = real_write(self, name, table)
        written.append(location)
        assert Path(location).is_file() and table.num_rows >= 1
        return location

    monkeypatch.setattr(spark_facts.FactsFolder, "write", recording_write)
    key = sh.customer_pilot(remote_app)
    sh.write_lake(remote_app, tmp_path / "lake.parquet")
    database, on_spark = sh.cubes(remote_app, key)
    assert sh.assert_cubes_equal(database, on_spark) > 0
    assert {Path(w).name for w in written} == {"assignments.parquet", "customers.parquet"}
    assert list(facts.iterdir()) == []  # the run's folder was removed


def test_a_facts_folder_that_cannot_be_written_fails_the_run_clearly(remote_app, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the folder should be")
    remote_app.config.update(SPARK_FACTS=str(blocker), SPARK_FACTS_MIN_ROWS=1)
    key = sh.customer_pilot(remote_app)
    sh.write_lake(remote_app, tmp_path / "lake.parquet")
    run = sh.analyse(remote_app, key, "spark")
    assert run.status == "failed" and "could not write its assignments" in run.error

