"""Apache Spark as the analysis engine, for a retailer whose transactions live in a data lake.

The aggregation is pilot.aggregation's, defined once: its SQLAlchemy Core statements are built for
PostgreSQL, compiled with their values inline and transpiled to Spark SQL by sqlglot, then run in
Spark over temporary views that carry Pilot's own table and column names:

- `transactions`: the retailer's transactions (PILOT_SPARK_TRANSACTIONS: a table of the session's
  catalog, or a Parquet or Delta path), their columns mapped to Pilot's by COLUMNS (overridden by
  PILOT_SPARK_COLUMNS). Customers are keyed by their external id and stores by their code.
- `assignments` and `customers` (customer pilots) or `enrolments` (store pilots): Pilot's own facts
  for the run, read from the database and sent as small DataFrames (Arrow); the customer's group is
  computed in the database (the same CASE as ever), store ids are Pilot's. Very large facts go
  through Parquet files in PILOT_SPARK_FACTS instead (pilot.spark_facts).

Only the cube's few rows come back. pyspark is optional (the `spark` extra): this module imports it
only when a run uses the engine. Failures become domain errors: Unavailable (Spark cannot be reached)
or Invalid (the transactions' table, path or columns are wrong), so the run ends `failed` with a
message and nothing of Pilot's state changes.
"""
from __future__ import annotations

import socket
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlparse

from sqlalchemy import Select, String, Table, func, literal, literal_column, select
from sqlalchemy.dialects.postgresql.base import PGCompiler
from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg
from sqlalchemy.orm import Session
from sqlalchemy.schema import CreateTableAs
from sqlalchemy.sql.elements import ColumnElement

from pilot.customer_groups import group_case, saved_groups
from pilot.errors import Invalid, Unavailable
from pilot.models import Assignment, Customer, Enrolment, Pilot, Stage, Store
from pilot.spark_facts import FactsFolder, facts_folder

# Pilot's transaction field -> the lake's column by default (the feed's field names), and what it must hold
COLUMNS = {"id": "event_id", "customer_id": "customer", "store_id": "store", "occurred_at": "occurred_at",
           "type": "type", "amount": "amount", "items": "items", "discount_cost": "discount_cost"}
OPTIONAL = {"id": "CAST(NULL AS STRING)", "type": "'sale'", "items": "CAST(0 AS BIGINT)",
            "discount_cost": "CAST(NULL AS DECIMAL(16,4))"}
KINDS = {"id": "key", "customer_id": "key", "store_id": "key", "occurred_at": "timestamp", "type": "string",
         "amount": "number", "items": "integer", "discount_cost": "number"}
# how each field is read into Pilot's types (amounts as Pilot's Numeric(16, 4), so sums are exact decimals)
CASTS = {"key": "STRING", "timestamp": "TIMESTAMP", "string": "STRING", "number": "DECIMAL(16,4)",
         "integer": "BIGINT"}
_lock = threading.Lock()


def installed() -> bool:
    """Whether pyspark and sqlglot are importable (the `spark` extra)."""
    try:
        import pyspark  # noqa: F401
        import sqlglot  # noqa: F401
    except ImportError:
        return False
    return True


def column_mapping(setting: str | None) -> dict[str, str]:
    """COLUMNS with PILOT_SPARK_COLUMNS' overrides (`field=lake_column,…`)."""
    mapping = dict(COLUMNS)
    for part in filter(None, (p.strip() for p in (setting or "").split(","))):
        name, _, lake = part.partition("=")
        if name.strip() not in COLUMNS or not lake.strip():
            raise Invalid(f"PILOT_SPARK_COLUMNS: {part!r} is not FIELD=COLUMN with FIELD one of {', '.join(COLUMNS)}.",
                          code="spark_columns")
        mapping[name.strip()] = lake.strip()
    return mapping


# --- the session -------------------------------------------------------------------------------------

def _reachable(url: str, default_port: int) -> None:
    """Fail at once, with the address, when nothing listens where the cluster should be (rather
    than waiting for executors that never come)."""
    parsed = urlparse("http://" + url.split("://", 1)[-1].split(",")[0].split("/")[0])
    host, port = parsed.hostname, parsed.port or default_port
    if not host:
        return
    try:
        socket.create_connection((host, port), timeout=5).close()
    except OSError as exc:
        raise Unavailable(f"Spark cannot be reached at {url}: {exc.strerror or exc}.", code="spark_unavailable") \
            from None


def spark_session(config: Mapping[str, Any]):
    """A fresh Spark session of its own for one run (its temporary views are its own), on the
    configured cluster: SPARK_REMOTE (Spark Connect) or SPARK_MASTER (default local[*])."""
    if not installed():
        raise Unavailable("PILOT_ANALYSIS_ENGINE=spark needs pyspark: pip install -e \".[spark]\" (and Java 17).",
                          code="spark_unavailable")
    from pyspark.sql import SparkSession
    remote, master = config.get("SPARK_REMOTE"), config.get("SPARK_MASTER") or "local[*]"
    try:
        if remote:
            _reachable(remote, 15002)
            spark = SparkSession.builder.remote(remote).create()
        else:
            if master.startswith("spark://"):
                _reachable(master, 7077)
            spark = _classic(SparkSession, master).newSession()
            # Pilot's facts go to the JVM as Arrow batches (not pickled rows: 7x faster, no Python on executors)
            spark.conf.set("spark.sql.execution.arrow.pyspark.enabled", "true")
        spark.conf.set("spark.sql.session.timeZone", "UTC")  # lake timestamps without a zone are UTC
    except Unavailable:
        raise
    except Exception as exc:  # the JVM would not start, the server refused…
        raise Unavailable(f"Spark could not start a session ({remote or master}): {_first_line(exc)}",
                          code="spark_unavailable") from None
    return spark


def _classic(spark_session: Any, master: str):
    """The process's classic session on `master` (one SparkContext per process: another master stops it)."""
    from pyspark import SparkContext
    with _lock:
        context = SparkContext._active_spark_context
        if context is not None and context.master != master:
            context.stop()
        return spark_session.builder.master(master).appName("pilot-analysis").getOrCreate()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines() or [type(exc).__name__])[0][:500]


# --- the retailer's transactions ----------------------------------------------------------------------

def read_lake(spark, location: str | None):
    """The lake's transactions: a Parquet or Delta path (`delta:` prefix, or a folder with a
    `_delta_log`), else a table of the session's catalog."""
    from pyspark.errors import AnalysisException
    if not location:
        raise Invalid("PILOT_ANALYSIS_ENGINE=spark needs PILOT_SPARK_TRANSACTIONS (a table or a path).",
                      code="spark_transactions")
    try:
        if location.startswith("delta:"):
            return spark.read.format("delta").load(location[len("delta:"):])
        if "/" in location or location.endswith(".parquet"):
            fmt = "delta" if _delta_folder(location) else "parquet"
            return spark.read.format(fmt).load(location)
        return spark.table(location)
    except AnalysisException as exc:
        raise Invalid(f"PILOT_SPARK_TRANSACTIONS {location!r}: no such table or path "
                      f"({_first_line(exc)})", code="spark_transactions") from None


def _delta_folder(location: str) -> bool:
    from pathlib import Path
    path = location.removeprefix("file:")
    return "://" not in path and (Path(path) / "_delta_log").is_dir()


def _kind_problem(kind: str, type_name: str) -> str | None:
    ok = {"key": ("string", "int", "bigint", "smallint", "tinyint", "long", "short", "byte", "integer", "varchar",
                  "char"),
          "timestamp": ("timestamp", "timestamp_ntz", "date"), "string": ("string", "varchar", "char"),
          "number": ("decimal", "double", "float", "int", "bigint", "smallint", "tinyint", "long", "integer"),
          "integer": ("int", "bigint", "smallint", "tinyint", "long", "integer", "short", "byte")}[kind]
    base = type_name.split("(")[0].lower()
    return None if base in ok else f"is {type_name}; a {kind} is needed"


def transactions_view(lake, mapping: dict[str, str]) -> str:
    """The SELECT over the lake (as `lake`) that gives Pilot's transaction columns, after checking
    that every mapped column is there with a usable type."""
    types = {f.name: f.dataType.simpleString() for f in lake.schema.fields}
    lowered = {k.lower(): k for k in types}
    columns, problems = [], {}
    for name, lake_name in mapping.items():
        found = lowered.get(lake_name.lower())
        if found is None:
            if name in OPTIONAL:
                columns.append(f"{OPTIONAL[name]} AS {name}")
                continue
            problems[name] = f"column {lake_name!r} is missing"
            continue
        problem = _kind_problem(KINDS[name], types[found])
        if problem:
            problems[name] = f"column {lake_name!r} {problem}"
            continue
        columns.append(f"CAST(`{found}` AS {CASTS[KINDS[name]]}) AS {name}")
    if problems:
        listed = "; ".join(f"{k} ({v})" for k, v in problems.items())
        raise Invalid(f"The transactions in Spark do not fit Pilot's columns: {listed}. Map them with "
                      "PILOT_SPARK_COLUMNS (field=column,…).", code="spark_columns", details={"fields": problems})
    return ", ".join(columns)


# --- compiling Pilot's statements to Spark SQL --------------------------------------------------------

class _Compiler(PGCompiler):
    """PostgreSQL's compiler with times inline as typed UTC literals (what Spark reads unambiguously)."""

    def render_literal_value(self, value: Any, type_: Any) -> str:
        if isinstance(value, datetime):
            moment = (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC)
            return f"TIMESTAMP '{moment.isoformat(sep=' ')}'"
        return super().render_literal_value(value, type_)


class _Dialect(PGDialect_psycopg):
    statement_compiler = _Compiler


def spark_sql(stmt: Select) -> str:
    """One of pilot.aggregation's statements (built for PostgreSQL) as Spark SQL."""
    import sqlglot
    from sqlglot import exp
    source = str(stmt.compile(dialect=_Dialect(), compile_kwargs={"literal_binds": True}))

    def epoch(node: exp.Expression) -> exp.Expression:
        # PostgreSQL's date_part('epoch', t): seconds since 1970 with the microseconds, as a double
        if isinstance(node, exp.Extract) and node.this.name.lower() == "epoch":
            micros = exp.Cast(this=exp.Anonymous(this="UNIX_MICROS", expressions=[node.expression.copy()]),
                              to=exp.DataType.build("double"))
            return exp.Paren(this=exp.Div(this=micros, expression=exp.Literal.number("1e6")))
        return node

    tree = sqlglot.parse_one(source, read="postgres").transform(epoch)
    return tree.sql(dialect="spark")


class SparkRunner:
    """Runs pilot.aggregation's statements in Spark over the run's views (see the module's docstring)."""

    name = "spark"
    dialect = "postgresql"
    joins = "spark"

    def __init__(self, spark, facts: FactsFolder | None = None) -> None:
        self.spark = spark
        self.facts = facts  # very large facts go through Parquet files there (pilot.spark_facts)

    def group(self, session: Session) -> ColumnElement:
        # computed in the database and sent with the customers (a bare column: no second FROM of customers)
        return literal_column("customers.grp", String)

    def rows(self, stmt: Select) -> list[dict[str, Any]]:
        with _spark_errors("computing the analysis"):
            return [r.asDict() for r in self.spark.sql(spark_sql(stmt)).collect()]

    @contextmanager
    def units(self, stmt: Select, units: int) -> Iterator[Table]:
        unit = CreateTableAs(stmt, "pilot_units", temporary=True).table
        with _spark_errors("computing the unit rows"):
            frame = self.spark.sql(spark_sql(stmt)).cache()
            frame.createOrReplaceTempView("pilot_units")
        try:
            yield unit
        finally:
            frame.unpersist()

    def view(self, name: str, rows: list[tuple], schema: str) -> None:
        """Pilot's rows as a temporary view (through Arrow: no Python workers needed on the cluster)."""
        import pyarrow as pa
        fields = [f.strip().split(" ", 1) for f in schema.split(",")]
        types = {"string": pa.string(), "bigint": pa.int64(), "timestamp": pa.timestamp("us", tz="UTC")}
        names = [f[0] for f in fields]
        data = pa.table({n: pa.array([r[i] for r in rows], type=types[t]) for i, (n, t) in enumerate(fields)},
                        schema=pa.schema([(n, types[t]) for n, t in fields]))
        if self.facts is not None and self.facts.wants(len(rows)):
            location = self.facts.write(name, data)
            with _spark_errors(f"reading Pilot's {name} from {location}"):
                self.spark.read.parquet(location).select(*names).createOrReplaceTempView(name)
            return
        with _spark_errors(f"sending Pilot's {name}"):
            self.spark.createDataFrame(data, schema=", ".join(f"{n} {t}" for n, t in fields)).select(*names) \
                .createOrReplaceTempView(name)

    def transactions(self, location: str | None, mapping: dict[str, str], stores: dict[str, int] | None) -> None:
        """The lake's transactions as `transactions`; with `stores` (code -> Pilot's id), only those
        stores' rows, their store ids Pilot's."""
        with _spark_errors("reading the transactions"):
            lake = read_lake(self.spark, location)
            columns = transactions_view(lake, mapping)
            lake.createOrReplaceTempView("pilot_lake")
            sql = f"SELECT {columns} FROM pilot_lake"
            if stores is not None:
                self.view("pilot_stores", [(code, store_id) for code, store_id in stores.items()],
                          "code string, id bigint")
                sql = (f"SELECT t.id, t.customer_id, s.id AS store_id, t.occurred_at, t.type, t.amount, t.items, "
                       f"t.discount_cost FROM ({sql}) t JOIN pilot_stores s ON s.code = t.store_id")
            self.spark.sql(sql).createOrReplaceTempView("transactions")


@contextmanager
def _spark_errors(doing: str) -> Iterator[None]:
    """Spark's failures as domain errors: a query Spark cannot analyse (a column of the wrong kind
    in the lake) is Invalid, anything else (the cluster went away) Unavailable."""
    from pyspark.errors import AnalysisException
    try:
        yield
    except (Invalid, Unavailable):
        raise
    except AnalysisException as exc:
        raise Invalid(f"Spark refused the analysis while {doing}: {_first_line(exc)}", code="spark_query") from None
    except Exception as exc:
        raise Unavailable(f"Spark failed while {doing}: {_first_line(exc)}", code="spark_unavailable") from None


# --- one run's facts ----------------------------------------------------------------------------------

@contextmanager
def runner(session: Session, config: Mapping[str, Any], pilot: Pilot, stage: Stage, cutoff: datetime
           ) -> Iterator[SparkRunner]:
    """A SparkRunner with the run's views: the lake's transactions and Pilot's facts for the stage."""
    spark = spark_session(config)
    run = SparkRunner(spark, facts_folder(config))
    mapping = column_mapping(config.get("SPARK_COLUMNS"))
    try:
        if pilot.unit == "store":
            _store_facts(session, run, config, mapping, pilot, stage)
        else:
            _customer_facts(session, run, config, mapping, pilot, stage, cutoff)
        yield run
    finally:
        _close(spark)
        if run.facts is not None:
            run.facts.remove()


def _close(spark) -> None:
    try:
        for name in ("transactions", "pilot_lake", "pilot_stores", "assignments", "customers",
                     "enrolments", "pilot_units"):
            spark.catalog.dropTempView(name)
        if hasattr(spark, "client"):  # Spark Connect: the run's own server-side session
            spark.stop()
    except Exception:  # the cluster is gone already: nothing is left to tidy
        pass


def _customer_facts(session: Session, run: SparkRunner, config: Mapping[str, Any], mapping: dict[str, str],
                    pilot: Pilot, stage: Stage, cutoff: datetime) -> None:
    """The stage's assignments and their customers (external id, home store, group) as views."""
    a, c = Assignment, Customer
    rows = session.execute(
        select(c.external_id, a.pilot_id, a.variant, a.stage, a.store_id, a.assigned_at, c.home_store_id,
               group_case(saved_groups(session)))
        .join(c, c.id == a.customer_id)
        .where(a.pilot_id == pilot.id, a.stage == stage.position, a.assigned_at < cutoff)).all()
    run.view("assignments", [tuple(r[:6]) for r in rows], "customer_id string, pilot_id bigint, variant string, "
             "stage bigint, store_id bigint, assigned_at timestamp")
    run.view("customers", [(r[0], r[6], r[7]) for r in rows], "id string, home_store_id bigint, grp string")
    run.transactions(config.get("SPARK_TRANSACTIONS"), mapping, None)


def _store_facts(session: Session, run: SparkRunner, config: Mapping[str, Any], mapping: dict[str, str],
                 pilot: Pilot, stage: Stage) -> None:
    """The stage's enrolments as a view, and the lake's rows of those stores."""
    e = Enrolment
    rows = session.execute(select(e.pilot_id, e.stage_id, e.store_id, e.arm, e.withdrawn_at)
                           .where(e.pilot_id == pilot.id, e.stage_id == stage.id)).all()
    run.view("enrolments", [tuple(r) for r in rows],
             "pilot_id bigint, stage_id bigint, store_id bigint, arm string, withdrawn_at timestamp")
    ids = {r.store_id for r in rows}
    stores = dict(session.execute(select(Store.code, Store.id).where(Store.id.in_(ids))).all()) if ids else {}
    run.transactions(config.get("SPARK_TRANSACTIONS"), mapping, stores)


# --- Pilot's assignments for the warehouse ------------------------------------------------------------

EXPORT_COLUMNS = ("pilot", "customer", "variant", "stage", "store", "assigned_at")


def assignment_rows(session: Session, pilot: Pilot) -> list[tuple]:
    """A pilot's assignments keyed as the lake keys them: the customer's external id, the store's code
    (the assignment's store, else the customer's home store) and the exposure time (UTC)."""
    a, c = Assignment, Customer
    store = Store.__table__.alias("store")
    return [tuple(r) for r in session.execute(
        select(literal(pilot.key, String), c.external_id, a.variant, a.stage,
               store.c.code, a.assigned_at)
        .join(c, c.id == a.customer_id)
        .outerjoin(store, store.c.id == func.coalesce(a.store_id, c.home_store_id))
        .where(a.pilot_id == pilot.id).order_by(a.customer_id))]


def export_assignments(session: Session, pilot: Pilot, path: str, fmt: str = "parquet") -> int:
    """Write a pilot's assignments (EXPORT_COLUMNS) to a Parquet or CSV file; returns the rows written."""
    rows = assignment_rows(session, pilot)
    if fmt == "csv":
        import csv
        with open(path, "w", newline="") as out:
            writer = csv.writer(out)
            writer.writerow(EXPORT_COLUMNS)
            writer.writerows((*r[:5], r[5].isoformat()) for r in rows)
        return len(rows)
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise Unavailable("Parquet needs pyarrow: pip install -e \".[spark]\"", code="parquet_unavailable") from None
    columns = list(zip(*rows)) if rows else [()] * len(EXPORT_COLUMNS)
    types = [pa.string(), pa.string(), pa.string(), pa.int32(), pa.string(), pa.timestamp("us", tz="UTC")]
    pq.write_table(pa.table([pa.array(col, type=t) for col, t in zip(columns, types)], names=list(EXPORT_COLUMNS)),
                   path)
    return len(rows)
