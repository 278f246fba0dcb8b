"""Restoring and verifying backups: download, check, ``pg_restore``, compare."""

from __future__ import annotations

import getpass
import json
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from observatory_assets.defs.operations.backups import (
    BackupError,
    database_contents,
    libpq_args,
    pg_tool,
    sidecar_key,
)
from observatory_assets.lib.audit import record_audit
from observatory_assets.lib.errors import failure_message
from observatory_assets.lib.statuses import BackupStatus
from resources.embedded import database_url_in
from resources.object_store import ObjectStore, read_hashed
from resources.postgres import create_database, database_exists, drop_database, engine_for
from resources.settings import as_libpq_dsn

# --- download, restore, verify ----------------------------------------------------------------------


@dataclass
class BackupRecord:
    """What is known about a backup object: from ``backups``, else from its sidecar."""

    key: str
    size: int | None
    sha256: str | None
    table_counts: dict[str, int] = field(default_factory=dict)
    table_checksums: dict[str, str] = field(default_factory=dict)


def backup_record(engine: Engine | None, store: ObjectStore, key: str) -> BackupRecord:
    """The recorded size, checksum and contents of a backup; the sidecar answers when the
    database does not know the key (for example after losing the database)."""
    if engine is not None:
        with engine.connect() as conn:
            row = conn.execute(
                text(
                    "SELECT size_bytes, sha256, table_counts, table_checksums, status FROM backups WHERE object_key = :k"
                ),
                {"k": key},
            ).one_or_none()
        if row is not None:
            if row.status != BackupStatus.COMPLETED:
                raise BackupError(f"backup {key} is {row.status}, not a completed backup")
            return BackupRecord(key, row.size_bytes, row.sha256, row.table_counts, row.table_checksums)
    if store.size(sidecar_key(key)) is not None:
        with store.open(sidecar_key(key)) as stream:
            sidecar = json.load(stream)
        return BackupRecord(
            key, sidecar["size"], sidecar["sha256"], sidecar["table_counts"], sidecar["table_checksums"]
        )
    if store.size(key) is None:
        raise BackupError(f"no backup object {key}")
    return BackupRecord(key, None, None)


@contextmanager
def downloaded(store: ObjectStore, record: BackupRecord) -> Iterator[Path]:
    """The backup in a local temporary file, after checking its size and SHA-256 against the record."""
    if store.size(record.key) is None:
        raise BackupError(f"no backup object {record.key}")
    with tempfile.TemporaryDirectory(prefix="observatory-restore-") as tmp:
        path = Path(tmp) / "backup.dump"
        with open(path, "wb") as out:
            size, sha256 = read_hashed(store, record.key, into=out)
        if record.size is not None and size != record.size:
            raise BackupError(f"backup {record.key} is {size} bytes, {record.size} were written: truncated or replaced")
        if record.sha256 is not None and sha256 != record.sha256:
            raise BackupError(f"backup {record.key} is corrupted: SHA-256 {sha256[:16]}… "
                              f"differs from the recorded {record.sha256[:16]}…")  # fmt: skip
        yield path


def restore_into(dump: Path, admin_url: str, target: str, bin_dir: str = "", jobs: int = 2) -> str:
    """Create database ``target`` (dropping one of that name) on the server of ``admin_url`` and
    ``pg_restore`` the dump into it; returns the target's URL. ``admin_url`` must be a database
    other than ``target`` on the same server."""
    if make_url(admin_url).database == target:
        raise ValueError("connect through another database than the one being restored")
    with engine_for(admin_url).connect() as conn:
        major = int(conn.execute(text("SHOW server_version_num")).scalar_one()) // 10000
    target_url = create_database(admin_url, target)
    dsn, env = libpq_args(target_url)
    command = [pg_tool("pg_restore", major, bin_dir), "--exit-on-error", "--no-owner", f"--jobs={jobs}",
               f"--dbname={dsn}", str(dump)]  # fmt: skip
    finished = subprocess.run(command, capture_output=True, env=env)
    if finished.returncode != 0:
        raise BackupError(f"pg_restore failed (exit {finished.returncode}): "
                          f"{finished.stderr[-2000:].decode('utf-8', 'replace').strip()}")  # fmt: skip
    return target_url


def _maintenance_url(database_url: str) -> str:
    return database_url_in(database_url, "postgres")


@dataclass
class VerificationResult:
    """A backup restored into a scratch database and compared with what it recorded."""

    key: str
    tables: int
    rows: int
    mismatches: dict[str, dict]
    download_s: float
    restore_s: float
    compare_s: float

    @property
    def seconds(self) -> float:
        return self.download_s + self.restore_s + self.compare_s


def verify_backup(
    engine: Engine, store: ObjectStore, database_url: str, key: str, bin_dir: str = ""
) -> VerificationResult:
    """Restore ``key`` into a scratch database, compare row counts and key-table fingerprints with
    the recorded ones, set ``verified_at`` (or mark the backup failed) and drop the scratch database."""
    record = backup_record(engine, store, key)
    if not record.table_counts:
        raise BackupError(f"backup {key} recorded no table counts to compare with")
    admin_url = _maintenance_url(database_url)
    scratch = f"observatory_verify_{uuid.uuid4().hex[:12]}"
    timings = [time.perf_counter()]
    try:
        with downloaded(store, record) as dump:
            timings.append(time.perf_counter())
            scratch_url = restore_into(dump, admin_url, scratch, bin_dir)
        timings.append(time.perf_counter())
        with engine_for(scratch_url).connect() as conn, conn.begin():
            counts, checksums = database_contents(conn)
        timings.append(time.perf_counter())
    except BackupError as error:
        _record_verification(engine, key, str(error))
        raise
    finally:
        drop_database(admin_url, scratch)
    mismatches = _differences(record, counts, checksums)
    _record_verification(engine, key, f"restored contents differ: {sorted(mismatches)}" if mismatches else None)
    result = VerificationResult(key, len(counts), sum(counts.values()), mismatches,
                                timings[1] - timings[0], timings[2] - timings[1], timings[3] - timings[2])  # fmt: skip
    if mismatches:
        raise BackupError(f"backup {key} restored with different contents: {json.dumps(mismatches)[:1500]}")
    return result


def _differences(record: BackupRecord, counts: dict[str, int], checksums: dict[str, str]) -> dict[str, dict]:
    """Where restored contents differ from what the backup recorded: table → recorded and restored value."""
    mismatches = {
        t: {"recorded": record.table_counts.get(t), "restored": counts.get(t)}
        for t in sorted(set(record.table_counts) | set(counts))
        if record.table_counts.get(t) != counts.get(t)
    }
    return mismatches | {
        f"{t} (checksum)": {"recorded": c, "restored": checksums.get(t)}
        for t, c in record.table_checksums.items()
        if checksums.get(t) != c
    }


def _record_verification(engine: Engine, key: str, error: str | None) -> None:
    with engine.begin() as conn:
        if error is None:
            conn.execute(text("UPDATE backups SET verified_at = now(), error = NULL WHERE object_key = :k"), {"k": key})
        else:
            conn.execute(
                text("UPDATE backups SET status = :failed, error = :e WHERE object_key = :k AND status = :completed"),
                {
                    "k": key,
                    "e": failure_message(f"verification failed: {error}"),
                    "failed": BackupStatus.FAILED,
                    "completed": BackupStatus.COMPLETED,
                },  # fmt: skip
            )


def newest_backup(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return conn.execute(
            text("SELECT object_key FROM backups WHERE status = :completed ORDER BY started_at DESC, id DESC LIMIT 1"),
            {"completed": BackupStatus.COMPLETED},
        ).scalar()


def _backup_history(engine: Engine) -> str:
    """Every row of ``backups`` (without ids) as JSON, to carry across a restore over the live database."""
    with engine.connect() as conn:
        return conn.execute(
            text("SELECT coalesce(jsonb_agg(to_jsonb(b) - 'id' ORDER BY b.id), '[]')::text FROM backups b")
        ).scalar_one()


#: The live database's backup history written over the restored one: rows the dump did not know are
#: added, rows it knew get their newer state (completed, verified, pruned, failed).
_KEEP_HISTORY = """
INSERT INTO backups (object_key, size_bytes, sha256, table_counts, table_checksums, status, error, started_at,
                     finished_at, verified_at)
SELECT object_key, size_bytes, sha256, table_counts, table_checksums, status, error, started_at, finished_at,
       verified_at
  FROM jsonb_populate_recordset(NULL::backups, CAST(:rows AS jsonb))
ON CONFLICT (object_key) DO UPDATE
   SET size_bytes = EXCLUDED.size_bytes, sha256 = EXCLUDED.sha256, table_counts = EXCLUDED.table_counts,
       table_checksums = EXCLUDED.table_checksums, status = EXCLUDED.status, error = EXCLUDED.error,
       started_at = EXCLUDED.started_at, finished_at = EXCLUDED.finished_at, verified_at = EXCLUDED.verified_at
"""


#: Who owns a database and whether the current role may drop it (as its owner, a member of the owner or a superuser).
_MAY_DROP = """
SELECT pg_get_userbyid(d.datdba) AS owner, current_user AS role,
       pg_has_role(d.datdba, 'MEMBER') OR (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) AS may_drop
  FROM pg_database d
 WHERE d.datname = :name
"""


def _check_may_replace(admin_url: str, target: str) -> None:
    """Only the owner of an existing database may replace it. The application's role (no DDL rights)
    is told, before anything is downloaded, which role to restore as."""
    with engine_for(admin_url).connect() as conn:
        found = conn.execute(text(_MAY_DROP), {"name": target}).one_or_none()
    if found is not None and not found.may_drop:
        raise ValueError(
            f"role {found.role!r} cannot replace database {target!r}, which {found.owner!r} owns: run the restore "
            f"with OBSERVATORY_DATABASE_URL set to the URL of {found.owner!r} (the role migrations run as)"
        )


def restore_backup(
    engine: Engine | None,
    store: ObjectStore,
    database_url: str,
    key: str,
    target_db: str | None = None,
    force: bool = False,
    bin_dir: str = "",
) -> str:
    """Restore backup ``key`` into ``target_db`` (default: the live database) after checking its size
    and SHA-256. An existing database, and above all the live one, is only replaced with ``force``.

    The dump is restored under a temporary name and checked against the contents the backup recorded;
    only then is it swapped in by renaming, so a dump that fails to restore or verify leaves the target
    as it was. Over the live database, its ``backups`` history is kept (the dump's own table is older).
    The restore is written to ``audit_log`` of the restored database. Returns the target's URL."""
    live = make_url(database_url).database
    target = target_db or live
    admin_url = _maintenance_url(database_url)
    if not force and database_exists(admin_url, target):
        which = "the live database" if target == live else "existing database"
        raise ValueError(f"refusing to overwrite {which} {target!r}; pass --force to replace it")
    _check_may_replace(admin_url, target)
    record = backup_record(engine, store, key)
    history = _backup_history(engine) if engine is not None and target == live else None
    staging = f"observatory_restoring_{uuid.uuid4().hex[:12]}"
    try:
        with downloaded(store, record) as dump:
            staging_url = restore_into(dump, admin_url, staging, bin_dir)
        _verify_restored(staging_url, record)
        with engine_for(staging_url).begin() as conn:
            if history is not None:  # the dump's own backups table is older than the history it replaced
                conn.execute(text(_KEEP_HISTORY), {"rows": history})
            record_audit(
                conn, getpass.getuser(), "restore", "backup", key,
                details={"target_db": target, "sha256": record.sha256, "forced": force},
            )  # fmt: skip
        engine_for(staging_url).dispose()
        if engine is not None and target == live:
            engine.dispose()
        _swap_in(admin_url, staging, target)
    finally:
        drop_database(admin_url, staging)  # a no-op once swapped in
    return database_url_in(admin_url, target)


def _verify_restored(restored_url: str, record: BackupRecord) -> None:
    """Raise unless a restored database holds what the backup recorded (when it recorded its contents)."""
    if not record.table_counts:
        return
    with engine_for(restored_url).connect() as conn, conn.begin():
        counts, checksums = database_contents(conn)
    mismatches = _differences(record, counts, checksums)
    if mismatches:
        raise BackupError(f"backup {record.key} restored with different contents: {json.dumps(mismatches)[:1500]}")


def _swap_in(admin_url: str, staging: str, target: str) -> None:
    """Give database ``staging`` the name ``target``; an existing ``target`` is closed to new connections,
    its sessions ended, set aside under another name and dropped only once the new one holds the name."""
    retired = f"observatory_replaced_{uuid.uuid4().hex[:12]}"
    if not database_exists(admin_url, target):
        _rename_database(admin_url, staging, target)
        return
    engine_for(database_url_in(admin_url, target)).dispose()
    with psycopg.connect(as_libpq_dsn(admin_url), autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(sql.Identifier(target)))
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (target,),
        )
    _rename_database(admin_url, target, retired)
    try:
        _rename_database(admin_url, staging, target)
    except BaseException:
        _rename_database(admin_url, retired, target)
        with psycopg.connect(as_libpq_dsn(admin_url), autocommit=True) as conn:
            conn.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true").format(sql.Identifier(target)))
        raise
    drop_database(admin_url, retired)


def _rename_database(admin_url: str, name: str, new_name: str, attempts: int = 50) -> None:
    """``ALTER DATABASE name RENAME TO new_name``, waiting out sessions that are still closing."""
    statement = sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(name), sql.Identifier(new_name))
    with psycopg.connect(as_libpq_dsn(admin_url), autocommit=True) as conn:
        for attempt in range(attempts):
            try:
                conn.execute(statement)
                return
            except psycopg.errors.ObjectInUse:
                if attempt == attempts - 1:
                    raise BackupError(f"database {name!r} is still in use; could not rename it") from None
                time.sleep(0.1)
