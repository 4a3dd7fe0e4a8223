"""The `pilot` command: database, tokens, demo data and analyses."""
from __future__ import annotations

import click
from flask.cli import FlaskGroup
from sqlalchemy import select

from pilot import create_app
from pilot.audit import record
from pilot.auth import CLI, RULES, issue_token, revoke_token
from pilot.db import db
from pilot.errors import PilotError
from pilot.models import ApiToken
from pilot.models.tokens import ROLES
from pilot.stores import get_store

cli = FlaskGroup(create_app=lambda: create_app(), help="Pilot: staged pilots of loyalty programmes.")


@cli.group("db")
def db_group() -> None:
    """Database schema."""


@db_group.command("upgrade")
def db_upgrade() -> None:
    """Apply every pending migration."""
    from pilot.migrate import current_revision, upgrade
    upgrade(db.engine)
    click.echo(f"database at revision {current_revision(db.engine)}")


@cli.group("tokens")
def tokens_group() -> None:
    """API tokens."""


@tokens_group.command("create")
@click.option("--role", required=True, type=click.Choice(ROLES))
@click.option("--name", required=True)
@click.option("--store", "store_code", default=None, help="Store code (store tokens only).")
def tokens_create(role: str, name: str, store_code: str | None) -> None:
    """Create a token and print its secret once."""
    try:
        store = get_store(db.session, store_code) if store_code else None
        token, secret = issue_token(db.session, name, role, store)
    except PilotError as exc:
        raise click.UsageError(exc.message) from None
    record(db.session, CLI.actor, "create", "api_token", token.id, after={"name": name, "role": role})
    db.session.commit()
    click.echo(f"token {token.id} ({role}) created; the secret is shown only now:\n{secret}")


@tokens_group.command("list")
def tokens_list() -> None:
    """List tokens (never their secrets)."""
    for t in db.session.scalars(select(ApiToken).order_by(ApiToken.id)):
        state = f"revoked {t.revoked_at:%Y-%m-%d}" if t.revoked_at else "active"
        used = f"last used {t.last_used_at:%Y-%m-%d %H:%M}" if t.last_used_at else "never used"
        click.echo(f"{t.id}\t{t.prefix}…\t{t.role}\t{t.store.code if t.store else '-'}\t{state}\t{t.name}\t{used}")


@tokens_group.command("revoke")
@click.argument("token_id", type=int)
def tokens_revoke(token_id: int) -> None:
    """Revoke a token by id."""
    token = db.session.get(ApiToken, token_id)
    if token is None:
        raise click.UsageError(f"no token {token_id}")
    revoke_token(db.session, CLI.actor, token)
    db.session.commit()
    click.echo(f"token {token_id} revoked")


@cli.group("users")
def users_group() -> None:
    """People who sign in (pilot.users)."""


@users_group.command("create")
@click.option("--email", required=True)
@click.option("--name", required=True)
@click.option("--role", required=True, type=click.Choice(ROLES))
@click.option("--store", "store_code", default=None, help="Store code (store staff only).")
@click.option("--password", default=None, help="Omit it to be asked (or to print a one-time reset link instead).")
@click.option("--reset-link/--no-reset-link", default=False, help="Print a one-time link to set the password.")
def users_create(email: str, name: str, role: str, store_code: str | None, password: str | None,
                 reset_link: bool) -> None:
    """Create a user; prints a one-time password link with --reset-link."""
    from pilot import users
    try:
        user = users.create_user(db.session, CLI.actor, {"email": email, "name": name, "role": role,
                                                         "store": store_code, "password": password})
        link = users.issue_reset(db.session, CLI.actor, user) if reset_link else None
    except PilotError as exc:
        raise click.UsageError(exc.message) from None
    db.session.commit()
    click.echo(f"user {user.id} {user.email} ({role}) created")
    if link:
        click.echo(f"set the password within {users.RESET_HOURS} hours at /reset/{link}")


@users_group.command("list")
def users_list() -> None:
    """List users (never their password hashes)."""
    from pilot import users
    for u in users.list_users(db.session):
        state = f"disabled {u.disabled_at:%Y-%m-%d}" if u.disabled_at else "active"
        click.echo(f"{u.id}\t{u.email}\t{u.role}\t{u.store.code if u.store else '-'}\t{state}\t{u.name}")


@users_group.command("disable")
@click.argument("user")
def users_disable(user: str) -> None:
    """Disable a user by id or e-mail: their tokens and sessions stop at once."""
    from pilot import users
    try:
        found = users.get_user(db.session, user)
    except PilotError as exc:
        raise click.UsageError(exc.message) from None
    revoked = users.disable_user(db.session, CLI.actor, found)
    db.session.commit()
    click.echo(f"user {found.email} disabled; {revoked} token(s) revoked")


@cli.command("roles", with_appcontext=False)
def roles() -> None:
    """Print the role matrix as a Markdown table (the README carries it)."""
    click.echo(roles_markdown())


def roles_markdown() -> str:
    """The role matrix, one row per endpoint and method."""
    lines = ["| endpoint | method | " + " | ".join(ROLES) + " |", "|---|---|" + "---|" * len(ROLES)]
    for endpoint, methods in RULES.items():
        for method, allowed in methods.items():
            marks = " | ".join("yes" if r in allowed else "" for r in ROLES)
            lines.append(f"| `{endpoint}` | {method} | {marks} |")
    return "\n".join(lines)


@cli.command("demo")
@click.option("--customers", default=20_000, show_default=True)
def demo(customers: int) -> None:
    """Migrate and load the demo retailer once; later runs reuse it."""
    from pilot.demo import demo_users, has_demo, load_demo
    from pilot.migrate import upgrade
    upgrade(db.engine)
    if has_demo(db.session):
        click.echo("demo data present; reusing it (create a token with `pilot tokens create --role admin --name me`)")
        return
    secret = load_demo(db.session, customers=customers)
    people = demo_users(db.session)
    db.session.commit()
    click.echo(f"demo data loaded. Admin token (shown only now):\n\n    {secret}\n")
    click.echo("Sign in at /login with an e-mail and password (shown only now; one user per role):\n")
    for email, role, password in people:
        what = "API token (a service user)" if role == "feed" else "password"
        click.echo(f"    {role:<8} {email:<22} {what}: {password}")
    click.echo("")


def main() -> None:
    """Entry point of the `pilot` console script."""
    cli.main(prog_name="pilot")


@cli.command("assign")
@click.option("--pilot", "pilot_key", required=True, help="Pilot key.")
def assign(pilot_key: str) -> None:
    """Assign every eligible customer of the pilot's enrolled stores (set-based)."""
    import json

    from pilot.assignment import assign_bulk, holdout
    from pilot.rollout import get_pilot
    try:
        pilot = get_pilot(db.session, pilot_key)
    except PilotError as exc:
        raise click.UsageError(exc.message) from None
    if pilot.state != "running":
        raise click.UsageError(f"pilot {pilot_key} is {pilot.state}; only a running pilot assigns")
    counts = assign_bulk(db.session, pilot, holdout())
    db.session.commit()
    click.echo(json.dumps(counts, indent=1))


def _ingest_options(command):
    for option in reversed([
            click.argument("file", type=click.Path(dir_okay=False, allow_dash=True)),
            click.option("--source", default="default", show_default=True,
                         help="Feed name; event ids are unique per source."),
            click.option("--on-error", type=click.Choice(["reject_batch", "skip_rows"]), default="reject_batch",
                         show_default=True, help="reject_batch: one bad row and nothing is stored."),
            click.option("--no-create-customers", is_flag=True,
                         help="Reject rows of unknown customers instead of creating them.")]):
        command = option(command)
    return command


@cli.command("ingest")
@_ingest_options
def ingest_command(file: str, source: str, on_error: str, no_create_customers: bool) -> None:
    """Ingest a CSV file of transactions (.csv or .csv.gz, - for standard input), streamed."""
    from pilot import ingestion
    _ingest_file(file, source, on_error, no_create_customers, ingestion.TRANSACTIONS)


@cli.command("ingest-events")
@_ingest_options
def ingest_events_command(file: str, source: str, on_error: str, no_create_customers: bool) -> None:
    """Ingest a CSV file of customer events (.csv or .csv.gz, - for standard input), streamed: columns
    event_id, customer, occurred_at, type, value, store and attr.<name> per attribute."""
    from pilot.events_feed import EVENTS
    _ingest_file(file, source, on_error, no_create_customers, EVENTS)


def _ingest_file(file: str, source: str, on_error: str, no_create_customers: bool, kind) -> None:
    """One CSV file through the one ingestion path, as one batch; its outcome printed as JSON."""
    import gzip
    import json
    import sys

    from pilot import ingestion
    raw = sys.stdin.buffer if file == "-" else open(file, "rb")
    stream = gzip.open(raw, "rb") if file.endswith(".gz") else raw
    try:
        rows = kind.csv_rows(stream)
        with ingestion.batch(db.session, CLI.actor, "cli", source=source, on_error=on_error,
                             create_customers=not no_create_customers, kind=kind) as ingest:
            ingest.add_all(rows)
            out = ingest.finish()
            db.session.commit()
    except PilotError as exc:
        click.echo(json.dumps({"error": exc.message, **exc.details}, indent=1, default=str), err=True)
        raise click.exceptions.Exit(1) from None
    finally:
        stream.close()
        raw.close()
    click.echo(json.dumps(out.as_dict(), indent=1))


@cli.command("import-pilot")
@click.argument("file", type=click.Path(dir_okay=False, exists=True))
@click.option("--assignments", type=click.Path(dir_okay=False, exists=True), default=None,
              help="A CSV of the assignments (customer, variant, stage, exposed_at, store) instead of the JSON's.")
@click.option("--enrolments", type=click.Path(dir_okay=False, exists=True), default=None,
              help="A CSV of the enrolments (store, stage, arm, enrolled_at, withdrawn_at) instead of the JSON's; "
                   "a store pilot's stores with the arm each ran in.")
def import_pilot_command(file: str, assignments: str | None, enrolments: str | None) -> None:
    """Import a customer or store pilot that already ran from a JSON file (as POST /api/v1/pilots/import),
    all or nothing."""
    import json
    from contextlib import ExitStack

    from pilot import pilot_import
    from pilot.row_validation import csv_rows
    try:
        with open(file, "rb") as f:
            document = json.load(f)
    except ValueError as exc:
        click.echo(json.dumps({"error": f"{file} is not valid JSON: {exc}"}), err=True)
        raise click.exceptions.Exit(1) from None
    with ExitStack() as files:
        def rows(path, required, known):
            return csv_rows(files.enter_context(open(path, "rb")), required, known) if path else None
        try:
            out = pilot_import.import_pilot(
                db.session, CLI.actor, document,
                rows(assignments, pilot_import.ASSIGNMENT_FIELDS[:4], pilot_import.ASSIGNMENT_FIELDS),
                rows(enrolments, pilot_import.ENROLMENT_FIELDS[:2], pilot_import.ENROLMENT_FIELDS))
            db.session.commit()
        except PilotError as exc:
            db.session.rollback()
            click.echo(json.dumps({"error": exc.message, "code": exc.code, **exc.details}, indent=1, default=str),
                       err=True)
            raise click.exceptions.Exit(1) from None
    click.echo(json.dumps(out, indent=1, default=str))


@cli.command("simulate")
@click.option("--scenario", default="clear_win", show_default=True,
              help="Planted truth: clear_win, tiered_groups, discount_loses_money, harmed_guardrail, srm, too_few, "
                   "novelty.")
@click.option("--key", default=None, help="Pilot key (default: from the scenario).")
@click.option("--customers", type=int, default=None, help="Customers (only when the database is empty).")
@click.option("--seed", type=int, default=11, show_default=True)
@click.option("--analyse/--no-analyse", default=True, show_default=True, help="Run an analysis at the end.")
def simulate_command(scenario: str, key: str | None, customers: int | None, seed: int, analyse: bool) -> None:
    """Generate a realistic retailer and a running pilot with planted effects into the database."""
    import json

    from pilot import analysis_runs
    from pilot.migrate import upgrade
    from pilot.rollout import get_pilot
    from pilot.simulate import SCENARIOS, preset, simulate
    if scenario not in SCENARIOS:
        raise click.UsageError(f"unknown scenario {scenario!r}; one of {', '.join(SCENARIOS)}")
    upgrade(db.engine)
    over = {"seed": seed, **({"key": key} if key else {}), **({"customers": customers} if customers else {})}
    out = simulate(db.session, preset(scenario, **over))
    db.session.commit()
    if analyse:
        run = analysis_runs.create_run(db.session, CLI.actor, get_pilot(db.session, out["pilot"]))
        analysis_runs.execute(db.session, run)
        db.session.commit()
        out.update(analysis=run.id, decision=run.decision,
                   reasons=[r.get("message") for r in run.recommendation["reasons"]])
    click.echo(json.dumps(out, indent=1))


@cli.command("analyse-spark")
@click.option("--pilot", "pilot_key", required=True, help="Pilot key.")
@click.option("--cutoff", type=click.DateTime(), default=None, help="Read data before this UTC time (default: now).")
def analyse_spark_command(pilot_key: str, cutoff) -> None:
    """Run one analysis of the pilot's current stage on Apache Spark (PILOT_SPARK_*, docs/spark.md)."""
    import json
    from datetime import UTC

    from pilot import analysis_runs
    from pilot.rollout import get_pilot
    try:
        run = analysis_runs.request_run(db.session, CLI.actor, get_pilot(db.session, pilot_key),
                                        cutoff.replace(tzinfo=UTC) if cutoff else None, False, engine="spark")
        db.session.commit()
    except PilotError as exc:
        db.session.rollback()
        raise click.UsageError(exc.message) from None
    run = analysis_runs.execute_leased(db.session, run.id)
    click.echo(json.dumps({"run": run.id, "status": run.status, "engine": run.engine, "decision": run.decision,
                           "error": run.error, "timings": run.timings}, indent=1))
    if run.status != "done":
        raise click.exceptions.Exit(1)


@cli.command("export-assignments")
@click.argument("path", type=click.Path(dir_okay=False, writable=True))
@click.option("--pilot", "pilot_key", required=True, help="Pilot key.")
@click.option("--format", "fmt", type=click.Choice(["parquet", "csv"]), default="parquet", show_default=True)
def export_assignments_command(path: str, pilot_key: str, fmt: str) -> None:
    """Write a pilot's assignments (external customer ids, store codes, exposure times) for warehouse joins."""
    from pilot.rollout import get_pilot
    from pilot.spark_engine import export_assignments
    try:
        rows = export_assignments(db.session, get_pilot(db.session, pilot_key), path, fmt)
    except PilotError as exc:
        raise click.UsageError(exc.message) from None
    click.echo(f"{rows} assignments written to {path} ({fmt})")


@cli.command("scheduler")
@click.option("--interval-minutes", type=float, default=None,
              help="How often running pilots are re-analysed (default PILOT_ANALYSIS_INTERVAL_MINUTES or 1440).")
@click.option("--once", is_flag=True, help="Run every job once now and exit.")
def scheduler_command(interval_minutes: float | None, once: bool) -> None:
    """Run the scheduler: re-analyse running pilots, pause on harmed guardrails, keep stage dates."""
    import logging

    from flask import current_app

    from pilot.logs import install_root
    from pilot.scheduler import run_all_once, serve
    app = current_app._get_current_object()
    interval = interval_minutes or app.config["ANALYSIS_INTERVAL_MINUTES"]
    if once:
        import json
        click.echo(json.dumps(run_all_once(app, interval), indent=1, default=str))
        return
    install_root(logging.INFO)  # before serve()'s basicConfig, which then leaves the safe handler be
    serve(app, interval)


class AnalyseError(click.ClickException):
    exit_code = 2


@cli.command("analyse", with_appcontext=False)
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--arm", required=True, help="Column holding each row's arm.")
@click.option("--control", required=True, help="The control arm's value in that column.")
@click.option("--metric", "metrics", multiple=True, required=True,
              help="COL (mean), COL:proportion (0/1) or NAME=NUM/DEN (ratio of sums); repeatable.")
@click.option("--covariate", "covariates", multiple=True, help="METRIC=COL: pre-period covariate for CUPED.")
@click.option("--cluster", help="Column of the cluster (store) for cluster-robust errors.")
@click.option("--segment", help="Column of the customer group to break results down by.")
@click.option("--weights", help="Planned allocation ARM=W,… for the sample-ratio check (default: equal).")
@click.option("--alpha", default=0.05, show_default=True, type=float)
@click.option("--sequential", is_flag=True, help="Add always-valid intervals and p-values.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def analyse_command(file: str, arm: str, control: str, metrics: tuple[str, ...], covariates: tuple[str, ...],
                    cluster: str | None, segment: str | None, weights: str | None, alpha: float, sequential: bool,
                    fmt: str) -> None:
    """Analyse an experiment export (CSV), streamed in bounded memory."""
    import json

    from pilot.csv_analysis import FlatFileError, analyse, few_clusters_warnings, render_table
    try:
        report = analyse(file, arm, control, list(metrics), list(covariates), cluster, segment, weights, alpha,
                         sequential)
    except FlatFileError as exc:
        raise AnalyseError(str(exc)) from None
    click.echo(json.dumps(report, indent=1) if fmt == "json" else render_table(report))
    if fmt == "json":  # the table carries the few-clusters warning; JSON has it in `message`, and on stderr
        for line in few_clusters_warnings(report["results"]):
            click.echo(line, err=True)


if __name__ == "__main__":
    main()
