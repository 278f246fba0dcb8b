"""Test fixtures: one real embedded PostgreSQL (18 + pgvector) per test session, a freshly
migrated database per test (cloned from a migrated template), a Dagster instance per test that needs one
(its storage cloned from a template with Dagster's tables), a local object store."""

from __future__ import annotations

import gc
import os
import shutil
import signal
import socket
import sys
import tempfile
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from observatory_assets.lib import migrations
from resources import ObjectStoreResource, PostgresResource
from resources.embedded import start_embedded_postgres, stop_embedded_postgres
from resources.object_store import LocalObjectStore
from resources.postgres import engine_for
from resources.settings import as_libpq_dsn
from tests.support.helpers import ROOT, create_database, drop_database, write  # noqa: F401 (shared with tests)

TEMPLATE = "observatory_template"
DAGSTER_TEMPLATE = "dagster_template"
#: The session's server is thrown away with its data directory: nothing it writes needs to survive a crash of
#: the machine, so it never waits for the disk (each commit, and the checkpoint every dropped database forces).
#: A crash of the server alone (``kill -9``) still loses nothing committed: the files stay in the page cache.
THROWAWAY_SERVER_SETTINGS = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}

# Tests collect files they write under the temporary directory: a root files may be collected from.
# Authors are stored pseudonymised; tests that point at a database by URL are "production" and need the key.
os.environ.setdefault("OBSERVATORY_PSEUDONYM_KEY", "a-pseudonym-key-for-tests-only")
os.environ.setdefault("OBSERVATORY_COLLECT_ROOTS", os.pathsep.join([os.getcwd(), tempfile.gettempdir()]))


def pytest_configure(config: pytest.Config) -> None:
    """The suite stops the servers it starts with SIGTERM, so it runs with the default stop signals however
    it was started. From a background shell SIGINT is ignored, and Dagster maps SIGTERM to the SIGINT
    handler it restores after every in-process run: SIGTERM would be ignored from then on, by this process
    and by every server it starts afterwards (an ignored signal is inherited), whose ``terminate()`` would
    then wait for ever."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


@pytest.fixture(autouse=True)
def no_current_dagster_instance():
    """Each test starts without a current Dagster instance: an instance a test entered and closed may
    stay current (Dagster keeps its state storage in a context variable, with a weak reference to the
    instance), and a later ``dg.materialize`` would fail on the dead reference."""
    from dagster._core.storage.defs_state.base import set_defs_state_storage

    with set_defs_state_storage(None):
        yield


@pytest.fixture(autouse=True, scope="module")
def leaks_reported_by_the_module_that_left_them():
    """Garbage from each test module is collected when the module ends: an instance, engine, connection
    or file it left open warns (ResourceWarning, an error in this suite) there, not in whichever later test
    the collector happened to run (a finalizer run at a random moment is also what broke ``ast.parse``)."""
    yield
    gc.collect()


@pytest.fixture(scope="session")
def pg_home():
    """The embedded server's home, outside pytest's temporary root: pgserver (run as root) opens the path
    to its own system user, and every pytest session that starts makes ``pytest-of-<user>`` private again,
    taking a running session's data directory from its server (PANIC, every later test fails)."""
    home = Path(tempfile.mkdtemp(prefix="observatory-test-pg-"))
    yield home
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server(pg_home: Path):
    """Superuser URL of the session's embedded server."""
    pgdata = pg_home / "pgdata"
    url = start_embedded_postgres(pgdata)
    with psycopg.connect(as_libpq_dsn(url), autocommit=True) as conn:
        for name, value in THROWAWAY_SERVER_SETTINGS.items():
            conn.execute(sql.SQL("ALTER SYSTEM SET {} = {}").format(sql.Identifier(name), sql.Literal(value)))
        conn.execute("SELECT pg_reload_conf()")
    yield url
    stop_embedded_postgres(pgdata)


@pytest.fixture(scope="session")
def migrated_template(pg_server: str) -> str:
    url = create_database(pg_server, TEMPLATE)
    migrations.upgrade(url)
    engine_for(url).dispose()
    return TEMPLATE


@pytest.fixture(scope="session")
def dagster_template(pg_server: str, tmp_path_factory) -> str:
    """A database holding an empty Dagster instance's tables: each test's instance storage is a copy of it
    (making the tables takes seconds, copying them a fraction of one)."""
    import dagster as dg
    import yaml

    from resources.embedded import dagster_instance_yaml

    home = tmp_path_factory.mktemp("dagster_template_home")
    url = create_database(pg_server, DAGSTER_TEMPLATE)
    (home / "dagster.yaml").write_text(yaml.safe_dump(dagster_instance_yaml(url)))
    with dg.DagsterInstance.from_config(str(home)):
        pass
    return DAGSTER_TEMPLATE


@pytest.fixture
def empty_database_url(pg_server: str):
    """A brand-new database with nothing in it."""
    name = f"empty_{uuid.uuid4().hex[:10]}"
    yield create_database(pg_server, name)
    drop_database(pg_server, name)


@pytest.fixture
def database_url(pg_server: str, migrated_template: str):
    """A database migrated to head, private to the test."""
    name = f"test_{uuid.uuid4().hex[:10]}"
    yield create_database(pg_server, name, template=migrated_template)
    drop_database(pg_server, name)


@pytest.fixture
def engine(database_url: str):
    engine = engine_for(database_url)
    yield engine
    engine.dispose()  # its pooled connections closed before the database is dropped


@pytest.fixture
def objects_root(tmp_path: Path) -> Path:
    return tmp_path / "objects"


@pytest.fixture
def store(objects_root: Path) -> LocalObjectStore:
    return LocalObjectStore(objects_root)


@pytest.fixture(scope="session")
def s3_session_server():
    """One real S3 server (SeaweedFS ``weed mini``) on loopback for the session, keys required."""
    from tests.support.s3 import SeaweedS3

    server = SeaweedS3().start()
    yield server
    server.close()


@pytest.fixture
def s3_server(s3_session_server):
    """The session's SeaweedFS S3 server, running (a fault test before may have stopped it):
    ``.endpoint``, ``.access_key``, ``.secret_key``, ``.bucket``, ``.stop()``, ``.restart()``."""
    yield s3_session_server.start()
    s3_session_server.start()  # a test that stopped it and failed leaves it running for the next


@pytest.fixture
def s3_endpoint(s3_server) -> str:
    """``host:port`` of the real S3 server; its keys are ``s3_server.access_key``/``.secret_key``."""
    return s3_server.endpoint


@pytest.fixture
def resources(database_url: str, objects_root: Path) -> dict:
    """The Dagster resources pointed at this test's database and object store."""
    return {
        "postgres": PostgresResource(url=database_url),
        "object_store": ObjectStoreResource(local_root=str(objects_root)),
    }


@pytest.fixture
def dagster_env(pg_server: str, database_url: str, dagster_template: str, tmp_path: Path) -> dict[str, str]:
    """Environment for subprocesses (the dagster and observatory CLIs) bound to this test's
    database, object store and a Dagster instance stored in Postgres (its tables made)."""
    import yaml

    from resources.embedded import dagster_instance_yaml

    name = f"dagster_{uuid.uuid4().hex[:10]}"
    # the instance's tables, there before any process starts: processes started together on an empty database
    # (two Celery workers, a CLI) each create them, and all but one fail (DuplicateObject), a worker dying at start
    dagster_url = create_database(pg_server, name, template=dagster_template)
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(yaml.safe_dump(dagster_instance_yaml(dagster_url)))
    env = {
        **os.environ,
        "OBSERVATORY_HOME": str(tmp_path),  # objects land in tmp_path/objects, as with `store`
        "OBSERVATORY_DATABASE_URL": database_url,
        "OBSERVATORY_DAGSTER_DATABASE_URL": dagster_url,
        "DAGSTER_HOME": str(home),
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
    }
    yield env
    drop_database(pg_server, name)


@pytest.fixture(scope="session")
def ghost_server():
    """One real Ghost 6 on 127.0.0.1 for the session (``make ghost`` installs it): skipped with the
    install command when it is missing, except under CI=true, where a missing Ghost fails the run."""
    from tests.support.ghost import INSTALL_HINT, GhostServer, ghost_dir, ghost_installed

    if not ghost_installed(ghost_dir()):
        message = f"Ghost not installed: run `{INSTALL_HINT}`"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"{message} (CI=true requires a real Ghost)", pytrace=False)
        pytest.skip(message)
    server = GhostServer(ghost_dir()).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def server():
    """A loopback feed server (``lib/feed_server``) for the test, stopped after it."""
    from observatory_assets.lib.feed_server import FeedServer

    with FeedServer() as running:
        yield running


@pytest.fixture
def client():
    """The guarded outbound client, allowed to reach loopback servers, with a short deadline."""
    from resources.outbound import OutboundClient, OutboundPolicy

    with OutboundClient(OutboundPolicy(allow_private_networks=True, total_timeout_s=5)) as guarded:
        yield guarded


@pytest.fixture
def names(monkeypatch):
    """Host names ending in ``.test`` resolve to 127.0.0.1 (as a DNS server would answer: the client under
    test is the real one); records each name resolved."""
    resolved: list[str] = []
    real = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        if isinstance(host, str) and host.endswith(".test"):
            resolved.append(host)
            return real("127.0.0.1", port, *args, **kwargs)
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return resolved
