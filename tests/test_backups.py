"""Backups against the real embedded PostgreSQL (its own pg_dump/pg_restore) and a real S3 endpoint
on loopback: what is backed up restores with identical counts and checksums, and every fault (S3
gone mid-upload, pg_dump failing, a truncated or corrupted object) fails clearly, leaves nothing
under the final key and leaves the earlier good backups alone."""

import hashlib
import json
import re
import subprocess
import uuid
from datetime import UTC, datetime, timedelta

import dagster as dg
import psycopg
import pytest
from sqlalchemy import text

from observatory_assets.defs.ingestion.collect import SourceRequest, collect
from observatory_assets.defs.ingestion.demo_data import write_demo_dataset
from observatory_assets.defs.ingestion.loading import ingest_collection_run
from observatory_assets.defs.operations.assets import backup_verification, backups_recent_and_verified, postgres_backups
from observatory_assets.defs.operations.backups import (
    CHECKSUM_TABLES,
    BackupError,
    backup_key,
    fail_stale_backups,
    libpq_args,
    prune_backups,
    sidecar_key,
    take_backup,
)
from observatory_assets.defs.operations.jobs import nightly_backup_schedule, weekly_restore_verification_schedule
from observatory_assets.defs.operations.restore import backup_record, newest_backup, restore_backup, verify_backup
from observatory_assets.defs.operations.retention import table_fingerprint
from resources import ObjectStoreResource
from resources.object_store import LocalObjectStore, put_bytes
from resources.postgres import engine_for
from resources.settings import as_libpq_dsn
from tests.support.helpers import drop_database
from tests.support.s3 import SERVER_GONE, StoppingUploads


def _load_demo(engine, tmp_path) -> None:
    """The demo dataset collected and ingested (payloads in a local store: only backups use S3 here)."""
    store = LocalObjectStore(tmp_path / "payloads")
    for name, fmt, path in write_demo_dataset(tmp_path / "demo", items_per_source=15):
        ingest_collection_run(engine, store, collect(engine, store, [SourceRequest(name, fmt, path=str(path))]))


def _sha256(store, key: str) -> str:
    with store.open(key) as stream:
        return hashlib.sha256(stream.read()).hexdigest()


def _row(engine, key: str):
    with engine.connect() as conn:
        return conn.execute(text("SELECT * FROM backups WHERE object_key = :k"), {"k": key}).mappings().one()


def _s3_store(s3_server, prefix: str = "backups"):
    """A bucket of this test's own on the session's SeaweedFS server (buckets outlive a test)."""
    return ObjectStoreResource(endpoint=s3_server.endpoint, bucket=f"{prefix}-{uuid.uuid4().hex[:12]}",
                               access_key=s3_server.access_key, secret_key=s3_server.secret_key).get_store()  # fmt: skip


@pytest.fixture(params=["local", "s3"])
def any_store(request, store):
    if request.param == "local":
        return store
    return _s3_store(request.getfixturevalue("s3_server"))


def test_backup_restores_with_identical_counts_and_checksums(engine, database_url, pg_server, any_store, tmp_path):
    _load_demo(engine, tmp_path)
    backup = take_backup(engine, any_store, database_url)
    assert backup.key.startswith(f"postgres/{datetime.now(UTC):%Y/%m/%d}/observatory_") and backup.key.endswith(".dump")
    assert backup.table_counts["raw_items"] > 0 and set(backup.table_checksums) == set(CHECKSUM_TABLES)
    row = _row(engine, backup.key)
    assert row["status"] == "completed" and row["size_bytes"] == any_store.size(backup.key) == backup.size
    assert row["sha256"] == _sha256(any_store, backup.key) == backup.sha256

    result = verify_backup(engine, any_store, database_url, backup.key)
    assert result.mismatches == {} and result.rows == sum(backup.table_counts.values())
    assert _row(engine, backup.key)["verified_at"] is not None
    with psycopg.connect(as_libpq_dsn(pg_server)) as conn:
        scratch = conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'observatory_verify_%'").fetchall()
    assert scratch == []

    target = f"restored_{backup.id}_{len(backup.sha256)}"
    try:
        url = restore_backup(engine, any_store, database_url, backup.key, target_db=target)
        with engine_for(url).connect() as restored, engine.connect() as live:
            for table in ("raw_items", "item_keys", "rejected_items", "item_duplicates", "collection_runs"):
                assert table_fingerprint(restored, table, only=False) == table_fingerprint(live, table, only=False)
            audit = restored.execute(text("SELECT action, object_id FROM audit_log")).all()
        assert [tuple(a) for a in audit] == [("restore", backup.key)]
    finally:
        drop_database(pg_server, target)


def test_restore_refuses_to_overwrite_the_live_or_an_existing_database_without_force(engine, database_url, store):
    backup = take_backup(engine, store, database_url)
    with pytest.raises(ValueError, match="refusing to overwrite the live database"):
        restore_backup(engine, store, database_url, backup.key)
    with pytest.raises(ValueError, match="existing database 'postgres'"):
        restore_backup(engine, store, database_url, backup.key, target_db="postgres")


def test_restore_over_the_live_database_keeps_the_backup_history(engine, database_url, store):
    older = take_backup(engine, store, database_url)  # its dump holds its own row as still `running`
    newer = take_backup(engine, store, database_url)
    verify_backup(engine, store, database_url, newer.key)
    with engine.connect() as conn:
        history = conn.execute(text("SELECT object_key, status, sha256, verified_at FROM backups ORDER BY 1")).all()
    restore_backup(engine, store, database_url, older.key, force=True)
    with engine_for(database_url).connect() as conn:
        assert (
            conn.execute(text("SELECT object_key, status, sha256, verified_at FROM backups ORDER BY 1")).all()
            == history
        )
        assert conn.execute(text("SELECT object_id FROM audit_log WHERE action = 'restore'")).scalars().all() == [
            older.key
        ]
    assert newest_backup(engine) == newer.key


def test_a_backup_left_running_by_a_killed_process_is_failed_once_stale(engine, database_url, store):
    started = datetime.now(UTC) - timedelta(hours=7)
    stale, fresh = backup_key(started), backup_key(started + timedelta(hours=6, minutes=59))
    with engine.begin() as conn:
        for key, at in ((stale, started), (fresh, started + timedelta(hours=6, minutes=59))):
            conn.execute(text("INSERT INTO backups (object_key, started_at) VALUES (:k, :at)"), {"k": key, "at": at})
    put_bytes(store, stale, b"half a dump")  # killed after the upload, before the row said completed
    assert fail_stale_backups(engine, store) == [stale]
    assert store.size(stale) is None and _row(engine, stale)["status"] == "failed"
    assert "abandoned" in _row(engine, stale)["error"] and _row(engine, fresh)["status"] == "running"
    assert fail_stale_backups(engine, store) == []


def _ballast(engine, megabytes: int) -> None:
    """Incompressible rows, so the dump spans several S3 multipart parts."""
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE ballast (b bytea)"))
        conn.execute(
            text("INSERT INTO ballast SELECT decode(string_agg(md5(random()::text || g || r), ''), 'hex') "
                 "FROM generate_series(1, :rows) r, generate_series(1, 65536) g GROUP BY r"),
            {"rows": megabytes},
        )  # fmt: skip


def test_s3_endpoint_stopping_mid_upload_leaves_no_object_and_earlier_backups(engine, database_url, s3_server):
    store = _s3_store(s3_server)
    good = take_backup(engine, store, database_url)
    _ballast(engine, 24)
    # the real server killed (SIGKILL) once the first 16 MiB part of the dump went up
    dying = StoppingUploads(store, s3_server, after_bytes=20 * 1024 * 1024)
    with pytest.raises(BackupError, match=f"(?s)failed.*({SERVER_GONE})") as failure:
        take_backup(engine, dying, database_url)
    assert dying.stream.stopped and not s3_server.running
    assert f"port={s3_server.port}" in str(failure.value)  # the reason names the endpoint that went away

    with engine.connect() as conn:
        failed = conn.execute(text("SELECT object_key, error FROM backups WHERE status = 'failed'")).one()
    assert re.search(SERVER_GONE, failed.error)
    s3_server.start()
    assert store.size(failed.object_key) is None and store.size(sidecar_key(failed.object_key)) is None
    assert list(store.list("postgres/")) == [good.key, sidecar_key(good.key)]
    assert _sha256(store, good.key) == good.sha256 and _row(engine, good.key)["status"] == "completed"

    retried = take_backup(engine, store, database_url)  # the server back, the next backup succeeds
    assert _row(engine, retried.key)["status"] == "completed" and store.size(retried.key) == retried.size


def test_pg_dump_failing_leaves_no_object_and_earlier_backups(engine, database_url, store):
    good = take_backup(engine, store, database_url)
    locker = psycopg.connect(as_libpq_dsn(database_url))
    try:
        locker.execute("LOCK TABLE sources IN ACCESS EXCLUSIVE MODE")
        with pytest.raises(BackupError, match=r"(?s)pg_dump failed \(exit 1\).*LOCK TABLE"):
            take_backup(engine, store, database_url, lock_wait_timeout_s=1)
    finally:
        locker.close()
    with engine.connect() as conn:
        failed = conn.execute(text("SELECT object_key, error FROM backups WHERE status = 'failed'")).one()
    assert "pg_dump failed" in failed.error and store.size(failed.object_key) is None
    assert list(store.list("postgres/")) == [good.key, sidecar_key(good.key)]
    assert _sha256(store, good.key) == good.sha256
    assert not list(store.list(".partial")) and not any((store.root / ".partial").iterdir())


def test_a_missing_tool_gives_a_clear_error(engine, database_url, store, tmp_path):
    with pytest.raises(BackupError, match="no pg_dump for PostgreSQL 18"):
        take_backup(engine, store, database_url, bin_dir=str(tmp_path))


@pytest.mark.parametrize("damage", ["truncated", "corrupted"])
def test_a_damaged_backup_object_fails_verification_and_restore_clearly(engine, database_url, pg_server, store, damage):
    older = take_backup(engine, store, database_url)
    newer = take_backup(engine, store, database_url)
    path = store.root / newer.key
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    else:
        path.write_bytes(data[:100] + bytes([data[100] ^ 0xFF]) + data[101:])
    expected = "truncated" if damage == "truncated" else "corrupted: SHA-256"
    with pytest.raises(BackupError, match=expected):
        restore_backup(engine, store, database_url, newer.key, target_db="never_created")
    with psycopg.connect(as_libpq_dsn(pg_server)) as conn:
        assert conn.execute("SELECT 1 FROM pg_database WHERE datname = 'never_created'").fetchone() is None
    with pytest.raises(BackupError, match=expected):
        verify_backup(engine, store, database_url, newer.key)
    assert _row(engine, newer.key)["status"] == "failed" and "verification failed" in _row(engine, newer.key)["error"]
    assert newest_backup(engine) == older.key
    assert verify_backup(engine, store, database_url, older.key).mismatches == {}


def test_a_sidecar_lets_a_backup_be_checked_without_its_database_row(engine, database_url, store):
    backup = take_backup(engine, store, database_url)
    record = backup_record(None, store, backup.key)
    assert (record.size, record.sha256, record.table_counts) == (backup.size, backup.sha256, backup.table_counts)


def _fake_backups(engine, store, ages_days: list[float], verified: set[int] = frozenset()) -> list[str]:
    """Completed backup records (and objects) started ``ages_days`` ago, newest first."""
    now = datetime.now(UTC)
    keys = []
    with engine.begin() as conn:
        for n, age in enumerate(ages_days):
            started = now - timedelta(days=age)
            key = backup_key(started)
            put_bytes(store, key, b"dump %d" % n)
            conn.execute(
                text(
                    "INSERT INTO backups (object_key, status, started_at, verified_at) VALUES (:k, 'completed', :s, :v)"
                ),
                {"k": key, "s": started, "v": started if n in verified else None},
            )
            keys.append(key)
    return keys


def test_pruning_by_age_keeps_the_minimum_and_the_newest_verified(engine, store):
    keys = _fake_backups(engine, store, [0.1, 1, 2, 15, 16, 17, 30], verified={5})
    pruned = prune_backups(engine, store, keep_days=14, keep_min=2)
    assert pruned == [keys[3], keys[4], keys[6]]
    for key in keys:
        assert (store.size(key) is None) == (key in pruned)
    with engine.connect() as conn:
        statuses = dict(conn.execute(text("SELECT object_key, status FROM backups")).all())
    assert {k for k, s in statuses.items() if s == "pruned"} == set(pruned)
    assert prune_backups(engine, store, keep_days=14, keep_min=2) == []


def test_pruning_never_deletes_the_newest_good_backup(engine, store):
    keys = _fake_backups(engine, store, [40, 50, 60])
    assert prune_backups(engine, store, keep_days=1, keep_min=0) == keys[1:]
    assert store.size(keys[0]) is not None


def _check_passed(resources, with_severity: bool = False) -> tuple:
    with dg.DagsterInstance.ephemeral() as instance:
        result = dg.materialize([backups_recent_and_verified], instance=instance, resources=resources,
                                selection=dg.AssetSelection.checks(backups_recent_and_verified))  # fmt: skip
    evaluation = result.get_asset_check_evaluations()[0]
    return (evaluation.passed, evaluation.description) + ((evaluation.severity,) if with_severity else ())


def test_assets_back_up_verify_and_the_check_watches_their_age(engine, resources):
    passed, why = _check_passed(resources)
    assert not passed and "newest backup missing" in why
    with dg.DagsterInstance.ephemeral() as instance:  # the first backup, before any verification: green
        first = dg.materialize([postgres_backups, backups_recent_and_verified], instance=instance, resources=resources)
    assert [e.passed for e in first.get_asset_check_evaluations()] == [True]
    with dg.DagsterInstance.ephemeral() as instance:
        result = dg.materialize([postgres_backups, backup_verification], instance=instance, resources=resources)
    backup_md = result.asset_materializations_for_node("postgres_backups")[0].metadata
    verify_md = result.asset_materializations_for_node("backup_verification")[0].metadata
    assert (
        backup_md["key"].value == verify_md["key"].value and backup_md["dagster/row_count"].value == 2
    )  # with the first one
    assert verify_md["tables_compared"].value == len(backup_md["table_counts"].value)
    assert _check_passed(resources) == (True, None)
    with engine.begin() as conn:  # backups for 9 days, none verified within 8: a warning, not an error
        conn.execute(
            text(
                "UPDATE backups SET verified_at = now() - interval '9 days', "
                "started_at = now() - interval '10 days' WHERE verified_at IS NOT NULL"
            )
        )
        conn.execute(text("INSERT INTO backups (object_key, status) VALUES ('postgres/new.dump', 'completed')"))
    passed, why, severity = _check_passed(resources, with_severity=True)
    assert not passed and "newest verification" in why and severity == dg.AssetCheckSeverity.WARN
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM backups WHERE object_key = 'postgres/new.dump'"))
    with engine.begin() as conn:
        conn.execute(text("UPDATE backups SET verified_at = now(), started_at = now() - interval '27 hours'"))
    passed, why, severity = _check_passed(resources, with_severity=True)
    assert not passed and "newest backup from" in why and severity == dg.AssetCheckSeverity.ERROR


@pytest.mark.parametrize(
    ("schedule", "when", "job"),
    [
        (nightly_backup_schedule, datetime(2026, 11, 21, 1, 30, tzinfo=UTC), "nightly_backup"),
        (weekly_restore_verification_schedule, datetime(2026, 11, 22, 3, 30, tzinfo=UTC), "restore_verification"),
    ],
)
def test_schedules_request_their_runs(schedule, when, job):
    with dg.DagsterInstance.ephemeral() as instance:
        data = schedule.evaluate_tick(dg.build_schedule_context(instance=instance, scheduled_execution_time=when))
    assert len(data.run_requests) == 1 and schedule.job_name == job
    assert schedule.execution_timezone == "UTC"


def test_cli_lists_refuses_restores_and_verifies(engine, database_url, pg_server, dagster_env, tmp_path):
    store = LocalObjectStore(tmp_path / "objects")
    backup = take_backup(engine, store, database_url)

    def observatory(*args: str) -> subprocess.CompletedProcess:
        command = ["observatory", "backup", *args]
        return subprocess.run(command, env=dagster_env, capture_output=True, text=True, timeout=300)

    listing = observatory("list", "--json")
    assert listing.returncode == 0 and json.loads(listing.stdout)[0]["object_key"] == backup.key
    refused = observatory("restore", backup.key)
    assert refused.returncode == 2 and "--force" in refused.stderr
    try:
        restored = observatory("restore", backup.key, "--target-db", "cli_restored")
        assert restored.returncode == 0 and "cli_restored" in restored.stdout
    finally:
        drop_database(pg_server, "cli_restored")
    verified = observatory("verify", backup.key)
    assert verified.returncode == 0 and "counts and checksums match" in verified.stdout
    assert _row(engine, backup.key)["verified_at"] is not None
    put_bytes(store, backup.key, b"not a dump")
    broken = observatory("verify", backup.key)
    assert broken.returncode == 1 and "truncated" in broken.stderr and len(broken.stderr.splitlines()) == 1


def test_passwords_go_to_the_environment_never_to_the_command_line():
    dsn, env = libpq_args("postgresql+psycopg://app:s3cret@db.example:5432/observatory")
    assert "s3cret" not in dsn and dsn == "postgresql://app@db.example:5432/observatory"
    assert env["PGPASSWORD"] == "s3cret"


def test_a_failed_forced_restore_leaves_the_live_database_intact(engine, database_url, pg_server, store, tmp_path):
    _load_demo(engine, tmp_path)
    with engine.connect() as live:
        before = {t: table_fingerprint(live, t, only=False) for t in ("raw_items", "collection_runs")}
    put_bytes(store, "postgres/foreign/corrupt.dump", b"PGDMP" + bytes(range(256)) * 64)  # no row, no sidecar
    with pytest.raises(BackupError, match="pg_restore failed"):
        restore_backup(engine, store, database_url, "postgres/foreign/corrupt.dump", force=True)
    with engine_for(database_url).connect() as live:
        assert {t: table_fingerprint(live, t, only=False) for t in before} == before
    with psycopg.connect(as_libpq_dsn(pg_server)) as conn:
        leftovers = conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'observatory_re%'").fetchall()
    assert leftovers == []


def test_a_restore_whose_contents_differ_from_the_record_is_not_swapped_in(engine, database_url, store, tmp_path):
    backup = take_backup(engine, store, database_url)
    _load_demo(engine, tmp_path)
    with engine.begin() as conn:  # the record claims rows the dump does not hold
        conn.execute(
            text("UPDATE backups SET table_counts = table_counts || '{\"raw_items\": 999}' WHERE object_key = :k"),
            {"k": backup.key},
        )
    with pytest.raises(BackupError, match="restored with different contents"):
        restore_backup(engine, store, database_url, backup.key, force=True)
    with engine_for(database_url).connect() as live:
        assert live.execute(text("SELECT count(*) FROM raw_items")).scalar() > 0
