"""Reading the audit trail, and its retention: rows older than the retention (default one year) are
archived to Parquet in object storage, verified by reading the archive back, and only then deleted.

The archive of one cutoff is ``archive/audit_log/<first id>-<last id>.parquet`` with a manifest beside
it, verified with the partition retention's checks (size, SHA-256, row count and row checksum); rows
are deleted by id range, and only if they still hash to what was archived.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import pyarrow as pa
from sqlalchemy import Engine, text

from observatory_assets.defs.operations.retention import manifest_key, verify_archive, write_parquet_archive
from resources.object_store import ObjectStore, put_bytes

DEFAULT_RETENTION_DAYS = 365
ARCHIVE_PREFIX = "archive/audit_log/"

_SCHEMA = pa.schema(
    [
        ("id", pa.int64()), ("at", pa.timestamp("us", tz="UTC")), ("actor", pa.string()), ("action", pa.string()),
        ("object_type", pa.string()), ("object_id", pa.string()), ("target", pa.string()),
        ("outcome", pa.string()), ("details", pa.string()),
    ]
)  # fmt: skip
_COLUMNS = "id, at, actor, action, object_type, object_id, target, outcome, details::text"


def audit_rows(engine: Engine, since: date | None = None, limit: int = 1000) -> list[dict]:
    """Audit rows, newest first, from ``since`` (UTC day) on."""
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT id, at, actor, action, object_type, object_id, target, outcome, details FROM audit_log "
                "WHERE CAST(:since AS date) IS NULL OR at >= CAST(:since AS date) ORDER BY at DESC, id DESC LIMIT :limit"
            ),
            {"since": since, "limit": limit},
        ).mappings()
        return [{k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in row.items()} for row in rows]


@dataclass
class AuditArchive:
    """One archived and deleted range of audit rows."""

    key: str
    manifest_key: str
    rows: int
    first_id: int
    last_id: int
    cutoff: str
    size: int
    sha256: str


def _fingerprint(conn, first_id: int, last_id: int) -> tuple[int, str]:
    return conn.execute(
        text(
            "SELECT count(*), coalesce(sum(('x' || left(md5(a::text), 15))::bit(60)::bigint), 0)::text "
            "FROM audit_log a WHERE id BETWEEN :first AND :last"
        ),
        {"first": first_id, "last": last_id},
    ).one()


def archive_audit_log(
    engine: Engine, store: ObjectStore, retention_days: int = DEFAULT_RETENTION_DAYS, now: datetime | None = None
) -> AuditArchive | None:
    """Archive every audit row older than ``retention_days`` to Parquet, verify it, then delete those rows.
    None when nothing is old enough (or retention is 0: keep everything)."""
    if retention_days <= 0:
        return None
    cutoff = (now or datetime.now(UTC)) - timedelta(days=retention_days)
    with engine.connect().execution_options(isolation_level="REPEATABLE READ") as conn, conn.begin():
        # the oldest ids up to the first row that is still within retention: a range of ids, all old
        first_id, last_id = conn.execute(
            text(
                "SELECT min(id), least(max(id), (SELECT min(id) - 1 FROM audit_log WHERE at >= :cutoff)) "
                "FROM audit_log WHERE at < :cutoff"
            ),
            {"cutoff": cutoff},
        ).one()
        if first_id is None or last_id < first_id:
            return None
        rows, fingerprint = _fingerprint(conn, first_id, last_id)
        key = f"{ARCHIVE_PREFIX}{first_id:012d}-{last_id:012d}.parquet"
        written = write_parquet_archive(
            conn, store, key, _SCHEMA,
            f"SELECT {_COLUMNS} FROM audit_log WHERE id BETWEEN :first AND :last ORDER BY id",
            {"first": first_id, "last": last_id},
        )  # fmt: skip
    stored = written.stored
    manifest = {
        "table": "audit_log", "key": key, "manifest_key": manifest_key(key),
        "rows": rows, "size": stored.size, "sha256": stored.sha256, "row_checksum": written.row_checksum,
        "pg_fingerprint": fingerprint, "first_id": first_id, "last_id": last_id, "cutoff": cutoff.isoformat(),
        "columns": _SCHEMA.names, "archived_at": datetime.now(UTC).isoformat(),
    }  # fmt: skip
    verify_archive(store, manifest)
    put_bytes(store, manifest["manifest_key"], json.dumps(manifest, indent=2).encode(), "application/json")
    with engine.begin() as conn:
        conn.execute(text("LOCK TABLE audit_log IN SHARE ROW EXCLUSIVE MODE"))
        if _fingerprint(conn, first_id, last_id) != (rows, fingerprint):
            raise RuntimeError(f"audit rows {first_id}-{last_id} changed since they were archived; kept")
        conn.execute(
            text("DELETE FROM audit_log WHERE id BETWEEN :first AND :last"), {"first": first_id, "last": last_id}
        )
    return AuditArchive(
        key, manifest["manifest_key"], rows, first_id, last_id, cutoff.isoformat(), stored.size, stored.sha256
    )
