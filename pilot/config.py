"""Settings read from PILOT_* environment variables; every one is listed in the README."""
from __future__ import annotations

import os
import secrets
from datetime import timedelta
from pathlib import Path


def _secret_key(instance_path: str) -> str:
    """The configured secret, or one generated once and kept in the instance folder."""
    configured = os.environ.get("PILOT_SECRET_KEY")
    if configured:
        return configured
    path = Path(instance_path) / "secret_key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(48))
        path.chmod(0o600)
    return path.read_text().strip()


class Config:
    """Application settings; environment variables override the defaults."""

    def __init__(self, instance_path: str) -> None:
        env = os.environ.get
        default_db = "sqlite:///" + str(Path(instance_path) / "pilot.db")
        self.DATABASE_URL = env("PILOT_DATABASE_URL", default_db)
        self.SECRET_KEY = _secret_key(instance_path)
        self.MAX_CONTENT_LENGTH = int(env("PILOT_MAX_CONTENT_LENGTH", str(16 * 1024 * 1024)))
        self.AUTO_MIGRATE = env("PILOT_AUTO_MIGRATE", "1" if self.DATABASE_URL.startswith("sqlite") else "0") == "1"
        self.HOLDOUT_SHARE = float(env("PILOT_HOLDOUT_SHARE", "0"))
        self.HOLDOUT_SALT = env("PILOT_HOLDOUT_SALT", "global-holdout")
        self.MAX_UPLOAD_BYTES = int(env("PILOT_MAX_UPLOAD_BYTES", str(50 * 1024**3)))
        self.ANALYSIS_WORK_MEM = env("PILOT_ANALYSIS_WORK_MEM", "64MB")
        # governance (pilot.governance, pilot.users, pilot.webhooks; docs/governance.md)
        self.GATE_FRESHNESS_HOURS = float(env("PILOT_GATE_FRESHNESS_HOURS", "24"))
        self.WEBHOOK_BACKOFF_SECONDS = float(env("PILOT_WEBHOOK_BACKOFF_SECONDS", "30"))
        self.SMTP_HOST = env("PILOT_SMTP_HOST") or None
        self.SMTP_PORT = int(env("PILOT_SMTP_PORT", "25"))
        self.SMTP_FROM = env("PILOT_SMTP_FROM", "pilot@localhost")
        self.SMTP_USER = env("PILOT_SMTP_USER") or None
        self.SMTP_PASSWORD = env("PILOT_SMTP_PASSWORD") or None
        self.SMTP_STARTTLS = env("PILOT_SMTP_STARTTLS", "0") == "1"
        self.OIDC_ISSUER = env("PILOT_OIDC_ISSUER") or None  # single sign-on (pilot.oidc)
        self.OIDC_CLIENT_ID = env("PILOT_OIDC_CLIENT_ID") or None
        self.OIDC_CLIENT_SECRET = env("PILOT_OIDC_CLIENT_SECRET") or None
        self.OIDC_SCOPES = env("PILOT_OIDC_SCOPES", "openid email profile")
        # the analysis on Apache Spark where the transactions live in a data lake (docs/spark.md)
        self.ANALYSIS_ENGINE = env("PILOT_ANALYSIS_ENGINE", "database")
        self.SPARK_REMOTE = env("PILOT_SPARK_REMOTE") or None
        self.SPARK_MASTER = env("PILOT_SPARK_MASTER") or None
        self.SPARK_TRANSACTIONS = env("PILOT_SPARK_TRANSACTIONS") or None
        self.SPARK_COLUMNS = env("PILOT_SPARK_COLUMNS") or None
        # very large pilots: Pilot's facts go to Spark as Parquet files in this folder (shared with the cluster)
        self.SPARK_FACTS = env("PILOT_SPARK_FACTS") or None
        self.SPARK_FACTS_MIN_ROWS = int(env("PILOT_SPARK_FACTS_MIN_ROWS", "1000000"))
        self.ANALYSIS_INTERVAL_MINUTES = float(env("PILOT_ANALYSIS_INTERVAL_MINUTES", "1440"))
        self.JOB_LEASE_SECONDS = float(env("PILOT_JOB_LEASE_SECONDS", "300"))
        self.TILL_LEAN_PATH = env("PILOT_TILL_LEAN_PATH", "1") == "1"
        self.BATCH_ROW_LIMIT = int(env("PILOT_BATCH_ROW_LIMIT", "10000"))
        self.MAX_DECOMPRESSED_BYTES = int(env("PILOT_MAX_DECOMPRESSED_BYTES", str(10 * 1024**3)))
        self.MAX_LINE_BYTES = int(env("PILOT_MAX_LINE_BYTES", str(1024**2)))
        self.MAX_CSV_COLUMNS = int(env("PILOT_MAX_CSV_COLUMNS", "1000"))
        # Secure unless PILOT_ENV=development (the local demo over plain http); PILOT_SECURE_COOKIES decides if set
        development = env("PILOT_ENV", "production") == "development"
        self.SESSION_COOKIE_SECURE = env("PILOT_SECURE_COOKIES", "0" if development else "1") == "1"
        self.PERMANENT_SESSION_LIFETIME = timedelta(hours=float(env("PILOT_SESSION_HOURS", "12")))
        self.SESSION_COOKIE_HTTPONLY = True
        self.SESSION_COOKIE_SAMESITE = "Lax"
        self.API_TITLE = "Pilot"
        self.API_VERSION = "v1"
        self.OPENAPI_VERSION = "3.0.3"
        self.OPENAPI_URL_PREFIX = "/api"
        self.OPENAPI_JSON_PATH = "openapi.json"
        self.OPENAPI_SWAGGER_UI_PATH = "docs"
        self.OPENAPI_SWAGGER_UI_URL = "/api/docs/static/"
        self.OPENAPI_REDOC_PATH = None

    def as_dict(self) -> dict[str, object]:
        """The settings as Flask config keys."""
        return {k: v for k, v in vars(self).items() if k.isupper()}
