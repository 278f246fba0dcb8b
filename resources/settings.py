"""Where Observatory's parts live: embedded on this machine, or external servers.

Every setting is an ``OBSERVATORY_*`` environment variable with an embedded
default, so a fresh checkout runs with none set. :func:`platform_settings` is the
one place that decides between the two worlds; resources and the CLI read it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url

PROJECT_ROOT = Path(__file__).resolve().parent.parent

#: Every variable the platform reads, with its meaning; the README table mirrors it.
ENVIRONMENT = {
    "OBSERVATORY_HOME": "directory for embedded data (Postgres, objects, Dagster home); default ./.observatory",
    "OBSERVATORY_DATABASE_URL": "application Postgres URL; unset = embedded pgserver",
    "OBSERVATORY_DAGSTER_DATABASE_URL": "Dagster instance storage URL; default: database 'dagster' beside the app DB",
    "OBSERVATORY_S3_ENDPOINT": "S3/MinIO endpoint host:port; unset = local directory object store",
    "OBSERVATORY_S3_BUCKET": "bucket for payloads, exports, archives and backups (default observatory)",
    "OBSERVATORY_S3_ACCESS_KEY": "S3 access key",
    "OBSERVATORY_S3_SECRET_KEY": "S3 secret key",
    "OBSERVATORY_S3_SECURE": "use TLS for S3 (true/false, default false)",
    "OBSERVATORY_S3_REGION": "S3 region (default us-east-1)",
    "OBSERVATORY_EMBEDDER": "item embedder: lexical (default, no model download), e5 or e5-lexical (extra [quality]), minilm (extra [semantic])",
    "OBSERVATORY_PG_BIN": "directory of pg_dump/pg_restore matching an external server (default: embedded, then PATH)",
    "OBSERVATORY_PSEUDONYM_KEY": "secret key (16+ characters) for pseudonymized network exports",
}


@dataclass(frozen=True)
class PlatformSettings:
    """The resolved location of every part; ``embedded`` parts run under ``home``."""

    home: Path
    database_url: str | None
    dagster_database_url: str | None
    s3_endpoint: str | None
    s3_bucket: str
    s3_secure: bool = False
    s3_region: str = "us-east-1"

    @property
    def embedded_database(self) -> bool:
        return self.database_url is None

    @property
    def embedded_object_store(self) -> bool:
        return self.s3_endpoint is None

    @property
    def pgdata(self) -> Path:
        return self.home / "pgdata"

    @property
    def objects_root(self) -> Path:
        return self.home / "objects"

    @property
    def dagster_home(self) -> Path:
        return self.home / "dagster_home"


def platform_settings(environ: dict[str, str] | None = None) -> PlatformSettings:
    """Resolve the settings from the environment (embedded wherever a variable is unset)."""
    env = os.environ if environ is None else environ
    home = Path(env.get("OBSERVATORY_HOME") or PROJECT_ROOT / ".observatory").resolve()
    return PlatformSettings(
        home=home,
        database_url=env.get("OBSERVATORY_DATABASE_URL") or None,
        dagster_database_url=env.get("OBSERVATORY_DAGSTER_DATABASE_URL") or None,
        s3_endpoint=env.get("OBSERVATORY_S3_ENDPOINT") or None,
        s3_bucket=env.get("OBSERVATORY_S3_BUCKET") or "observatory",
        s3_secure=(env.get("OBSERVATORY_S3_SECURE") or "false").strip().lower() in ("1", "true", "yes"),
        s3_region=env.get("OBSERVATORY_S3_REGION") or "us-east-1",
    )


def mask_dsn(url: str) -> str:
    """A database URL safe to print: the password is replaced by ``***``."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL at all: show nothing that could be a secret
        return "<unparseable database URL>"


def as_psycopg_url(url: str) -> str:
    """The SQLAlchemy URL for the application's driver, psycopg 3."""
    parsed = make_url(url)
    return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)


def as_psycopg2_url(url: str) -> str:
    """The SQLAlchemy URL for Dagster's storage, which needs psycopg2 (see SPEC §2)."""
    parsed = make_url(url)
    return parsed.set(drivername="postgresql+psycopg2").render_as_string(hide_password=False)


def as_libpq_dsn(url: str) -> str:
    """A plain ``postgresql://`` URL for libpq tools (psql, pg_dump) and raw psycopg."""
    parsed = make_url(url)
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)
