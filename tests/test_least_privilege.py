"""The application role production connects as (docker/create-app-role.sql: data access, no DDL)
runs everything that changes partitions or indexes: ingestion creating a month on demand, the
rollover, retention detaching and dropping an archived month (migration 0005), and a large
embedding run rebuilding the HNSW index around its write (0009) — through the owner's SECURITY
DEFINER functions, on the embedded PostgreSQL."""

import subprocess
import uuid
from datetime import date

import psycopg
import pytest
from sqlalchemy import text

from observatory_assets.defs.enrichment.embeddings import embed_run
from observatory_assets.defs.enrichment.lexical import LexicalEmbedder
from observatory_assets.defs.ingestion.collect import SourceRequest, collect
from observatory_assets.defs.ingestion.loading import ingest_collection_run
from observatory_assets.defs.operations.backups import take_backup
from observatory_assets.defs.operations.retention import apply_retention
from observatory_assets.defs.operations.rollover import month_partitions, roll_over
from resources.object_store import LocalObjectStore
from resources.postgres import engine_for
from resources.settings import as_libpq_dsn
from tests.conftest import create_database, drop_database, write
from tests.support.helpers import labelled_space
from tests.support.roles import as_role, create_app_role, drop_role


@pytest.fixture
def app_engine(pg_server, database_url):
    """An engine on the test's migrated database as a fresh application role."""
    suffix = uuid.uuid4().hex[:8]
    role, dagster_db, template_db = f"app_{suffix}", f"dagster_{suffix}", f"tmpl_{suffix}"
    create_database(pg_server, dagster_db)
    create_database(pg_server, template_db)
    create_app_role(database_url, role, "app-secret", dagster_db, template_db)
    url = as_role(database_url, role, "app-secret")
    yield engine_for(url)
    engine_for(url).dispose()
    drop_database(pg_server, dagster_db)
    drop_database(pg_server, template_db)
    drop_role(pg_server, role, database_url)


def test_the_app_role_creates_and_drops_months_only_through_the_owner_functions(app_engine, store, tmp_path):
    with app_engine.connect() as conn:
        assert conn.execute(text("SELECT current_user")).scalar_one().startswith("app_")
        with pytest.raises(Exception, match="permission denied"):
            conn.execute(text("CREATE TABLE raw_items_2019_04 (LIKE raw_items)"))
    payload = write(tmp_path / "old.jsonl", "".join(
        f'{{"id": "{n}", "title": "Old {n}", "text": "x", "published_at": "2019-05-0{n}T10:00:00Z"}}\n'
        for n in range(1, 4)
    ))  # fmt: skip
    run_id = collect(app_engine, store, [SourceRequest("old", "jsonl", path=str(payload))])
    assert ingest_collection_run(app_engine, store, run_id).loaded == 3  # the month is created on demand
    created = roll_over(app_engine, months_ahead=1, today=date(2031, 6, 10)).created
    assert created == ["raw_items_2031_06", "raw_items_2031_07", "trend_snapshots_2031_06", "trend_snapshots_2031_07"]
    with app_engine.connect() as conn:
        assert date(2019, 5, 1) in month_partitions(conn, "raw_items")

    result = apply_retention(app_engine, store, {"raw_items": 24}, today=date(2021, 6, 1))
    assert result.kept == {} and [(a.partition, a.rows, a.dropped) for a in result.archived] == [
        ("raw_items_2019_05", 3, True)
    ]
    with app_engine.connect() as conn:
        assert date(2019, 5, 1) not in month_partitions(conn, "raw_items")
        assert conn.execute(text("SELECT count(*) FROM raw_items")).scalar_one() == 0


def test_the_app_role_rebuilds_the_embeddings_index_only_through_the_owner_functions(app_engine, store, tmp_path):
    with app_engine.connect() as conn, pytest.raises(Exception, match="must be owner"):
        conn.execute(text("DROP INDEX item_embeddings_hnsw"))
    payload = write(tmp_path / "items.jsonl", "".join(
        f'{{"id": "{n}", "title": "Harbour strike day {n}", "text": "Dock workers walk out.", '
        f'"published_at": "2026-11-0{n}T10:00:00Z"}}\n' for n in range(1, 6)
    ))  # fmt: skip
    run_id = collect(app_engine, store, [SourceRequest("docks", "jsonl", path=str(payload))])
    ingest_collection_run(app_engine, store, run_id)
    # the run is the whole table, so it stages its vectors and rebuilds the index around the upsert
    assert embed_run(app_engine, LexicalEmbedder(labelled_space(1)), run_id).embedded == 5
    with app_engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM item_embeddings")).scalar_one() == 5
        assert conn.execute(
            text("SELECT indisvalid FROM pg_index WHERE indexrelid = 'item_embeddings_hnsw'::regclass")
        ).scalar_one()


@pytest.mark.parametrize("table", ["sources", "raw_items", "raw_items_default"])
def test_the_drop_function_refuses_anything_but_a_month_partition(app_engine, table):
    with app_engine.begin() as conn, pytest.raises(Exception, match="not a month partition"):
        conn.execute(text("SELECT drop_month_partition(CAST(:t AS regclass))"), {"t": table})


def test_roles_without_the_grant_cannot_run_the_owner_functions(pg_server, database_url):
    role = f"other_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(as_libpq_dsn(pg_server), autocommit=True) as conn:
        conn.execute(psycopg.sql.SQL("CREATE ROLE {} LOGIN").format(psycopg.sql.Identifier(role)))
    try:
        with psycopg.connect(as_libpq_dsn(as_role(database_url, role, "x")), autocommit=True) as conn:
            for call in ("SELECT ensure_month_partition('raw_items', DATE '2019-01-01')",
                         "SELECT drop_month_partition('raw_items_default')",
                         "SELECT drop_item_embeddings_index()", "SELECT build_item_embeddings_index()"):  # fmt: skip
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    conn.execute(call)
    finally:
        drop_role(pg_server, role, database_url)


def test_restore_force_as_the_app_role_names_the_owner_to_run_as_and_the_owner_restores(
    app_engine, engine, database_url, dagster_env, tmp_path
):
    backup = take_backup(engine, LocalObjectStore(tmp_path / "objects"), database_url)  # dagster_env's objects
    with engine.connect() as conn:
        owner = conn.execute(text("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()"))
        owner = owner.scalar_one()
    app_url = app_engine.url.render_as_string(hide_password=False)

    def restore_as(url: str) -> subprocess.CompletedProcess:
        return subprocess.run(["observatory", "backup", "restore", backup.key, "--force"], capture_output=True,
                              text=True, timeout=300, env={**dagster_env, "OBSERVATORY_DATABASE_URL": url})  # fmt: skip

    refused = restore_as(app_url)
    assert refused.returncode == 2 and len(refused.stderr.splitlines()) == 1, refused.stderr
    assert f"owns: run the restore with OBSERVATORY_DATABASE_URL set to the URL of '{owner}'" in refused.stderr
    with app_engine.connect() as conn:  # nothing was touched
        assert conn.execute(text("SELECT status FROM backups")).scalars().all() == ["completed"]

    app_engine.dispose()  # the owner's restore replaces the database under the application's connections
    restored = restore_as(database_url)
    assert restored.returncode == 0 and f"restored {backup.key}" in restored.stdout, restored.stderr
    with app_engine.connect() as conn:  # the application's role reads the restored database as before
        assert conn.execute(text("SELECT status FROM backups")).scalars().all() == ["completed"]
