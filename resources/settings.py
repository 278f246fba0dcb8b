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
    "OBSERVATORY_PUBLISH_TARGET": "where daily digests are published: static (default, site/ in object storage) or ghost",
    "OBSERVATORY_GHOST_URL": "Ghost site URL for the ghost publish target, e.g. https://news.example.org",
    "OBSERVATORY_GHOST_ADMIN_KEY": "Ghost Admin API key id:secret (never shown)",
    "OBSERVATORY_SITE_URL": "public base URL of the static site, used in feed links (default http://127.0.0.1:8765/)",
    "OBSERVATORY_TAKEDOWN_GRACE_HOURS": "hours between takedown stage 1 (withdrawn) and stage 2 (deleted); default 72",
    "OBSERVATORY_AUDIT_RETENTION_DAYS": "audit rows older than this are archived to Parquet and deleted; default 365, 0 keeps all",
    "OBSERVATORY_RETENTION_RAW_ITEMS_MONTHS": "months of raw_items to keep; older months archived, then dropped "
    "(default 0: keep all)",
    "OBSERVATORY_RETENTION_TREND_SNAPSHOTS_MONTHS": "months of trend_snapshots to keep (default 0: keep all)",
    "OBSERVATORY_RETENTION_COLLECTION_PAYLOADS_MONTHS": "months to keep collection-run payloads before they move "
    "to archive/ (default 0: keep all)",
    "OBSERVATORY_TRENDS_DIR": "directory of the trend YAML files (and sources.yaml); default ./trends",
    "OBSERVATORY_EXECUTOR": "executor of the heavy jobs (ingest, enrich, events, exports): default (in-process "
    "or multiprocess, per job) or celery (extra [scale]; steps run on dagster-celery workers)",
    "OBSERVATORY_CELERY_BROKER": "Celery broker URL for OBSERVATORY_EXECUTOR=celery, e.g. redis://:password@host:6379/0",
    "OBSERVATORY_CELERY_BACKEND": "Celery result backend URL (default: the broker URL)",
}

_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def env_flag(env, name: str, default: bool) -> bool:
    """A true/false variable; anything else is a configuration mistake, said in one line."""
    value = (env.get(name) or "").strip().lower()
    if not value:
        return default
    if value not in _TRUE + _FALSE:
        raise ValueError(f"{name} must be true or false, not {env.get(name)!r}")
    return value in _TRUE


def env_months(env, name: str) -> int:
    """A number of months (0 or unset: keep everything)."""
    value = (env.get(name) or "").strip()
    if not value:
        return 0
    if not value.isdigit():
        raise ValueError(f"{name} must be a whole number of months (0 keeps everything), not {value!r}")
    return int(value)


def is_secret(name: str) -> bool:
    """Variables whose value is never shown (keys and passwords); URLs are shown with the password masked."""
    return name.endswith(("_KEY", "_PASSWORD", "_SECRET", "_TOKEN"))


def displayed_value(name: str, env=None) -> str:
    """What ``observatory config`` shows for a variable: unset, ``(set)`` for a secret, a URL (database,
    Celery broker or backend) with its password masked, else the value."""
    value = (os.environ if env is None else env).get(name)
    if not value:
        return "(unset)"
    if is_secret(name):
        return "(set)"
    return mask_dsn(value) if name.endswith(("_URL", "_BROKER", "_BACKEND")) else value


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
    publish_target: str = "static"
    ghost_configured: bool = False
    site_url: str = "http://127.0.0.1:8765/"
    takedown_grace_hours: float = 72.0
    audit_retention_days: int = 365
    executor: str = "default"
    celery_broker_set: bool = False
    celery_backend_set: bool = False

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
        s3_secure=env_flag(env, "OBSERVATORY_S3_SECURE", default=False),
        s3_region=env.get("OBSERVATORY_S3_REGION") or "us-east-1",
        publish_target=(env.get("OBSERVATORY_PUBLISH_TARGET") or "static").strip().lower(),
        ghost_configured=bool(env.get("OBSERVATORY_GHOST_URL") and env.get("OBSERVATORY_GHOST_ADMIN_KEY")),
        site_url=env.get("OBSERVATORY_SITE_URL") or "http://127.0.0.1:8765/",
        takedown_grace_hours=float(env.get("OBSERVATORY_TAKEDOWN_GRACE_HOURS") or 72),
        audit_retention_days=int(env.get("OBSERVATORY_AUDIT_RETENTION_DAYS") or 365),
        executor=(env.get("OBSERVATORY_EXECUTOR") or "default").strip().lower(),
        celery_broker_set=bool(env.get("OBSERVATORY_CELERY_BROKER")),
        celery_backend_set=bool(env.get("OBSERVATORY_CELERY_BACKEND")),
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
