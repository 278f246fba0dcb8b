"""Retention: a month is archived to Parquet, verified, and only then dropped."""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import Connection, Engine, text

from observatory_assets.defs.operations.rollover import (
    ARCHIVE_BATCH_ROWS,
    COLLECTION_PAYLOADS,
    DEFAULT_LOCK_TIMEOUT_S,
    PARTITIONED_TABLES,
    _checked_table,
    _today,
    add_months,
    month_partitions,
    month_start,
)
from observatory_assets.lib.errors import failure_message
from observatory_assets.lib.sql import identifier, month_partition_name, set_lock_timeout
from observatory_assets.lib.statuses import CollectionRunStatus
from resources.object_store import ObjectStore, StoredObject, put_bytes, read_hashed, staged_upload
from resources.settings import platform_settings, variable

# --- retention: archive to Parquet, verify, then drop -------------------------------------------------

_ARROW_TYPES = {
    "bigint": pa.int64(),
    "integer": pa.int32(),
    "smallint": pa.int16(),
    "boolean": pa.bool_(),
    "double precision": pa.float64(),
    "real": pa.float64(),  # psycopg reads float4 as a Python float; float64 keeps that value exactly
    "text": pa.string(),
    "date": pa.date32(),
    "bytea": pa.binary(),
    "timestamp with time zone": pa.timestamp("us", tz="UTC"),
    "timestamp without time zone": pa.timestamp("us"),
    "text[]": pa.list_(pa.string()),
}


def _archive_columns(conn: Connection, table: str) -> tuple[list[str], pa.Schema]:
    """The SELECT list and Parquet schema of a table: typed where Arrow has the type, else text
    (jsonb, tsvector, regconfig and numeric keep their exact PostgreSQL text form)."""
    rows = conn.execute(
        text(
            "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
            "WHERE attrelid = CAST(:t AS regclass) AND attnum > 0 AND NOT attisdropped ORDER BY attnum"
        ),
        {"t": table},
    ).all()
    select, fields = [], []
    for name, type_name in rows:
        arrow_type = _ARROW_TYPES.get(type_name)
        select.append(identifier(name) if arrow_type else f"{identifier(name)}::text")
        fields.append(pa.field(name, arrow_type or pa.string()))
    return select, pa.schema(fields)


def _canonical(value) -> str:
    if value is None:
        return "\x00"
    if isinstance(value, datetime):
        return (value.astimezone(UTC) if value.tzinfo else value).isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, list):
        return json.dumps([_canonical(v) for v in value])
    if isinstance(value, float):
        return repr(value)
    return str(value)


class RowChecksum:
    """SHA-256 over the rows in order, each value in a canonical text form, so rows read from
    PostgreSQL and the same rows read back from Parquet give the same digest."""

    def __init__(self) -> None:
        self._digest = hashlib.sha256()
        self.rows = 0

    def update(self, rows: Iterable[tuple]) -> None:
        for row in rows:
            self._digest.update(("\x1f".join(map(_canonical, row)) + "\x1e").encode("utf-8", "surrogatepass"))
            self.rows += 1

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


def table_fingerprint(conn: Connection, table: str, only: bool = True) -> tuple[int, str]:
    """(rows, order-independent hash of every row's text form), computed by PostgreSQL. Retention
    takes it at archive time and again under lock before the drop (proving the partition did not
    change); backups take it in the dump's snapshot and again after a restore. ``only`` leaves out
    a partitioned table's partitions."""
    rows, digest = conn.execute(
        text(
            f"SELECT count(*), coalesce(sum(('x' || left(md5(t::text), 15))::bit(60)::bigint), 0)::text "
            f"FROM {'ONLY ' if only else ''}{identifier(table)} t"
        )
    ).one()
    return rows, digest


@dataclass
class ArchiveResult:
    """One archived month: where it went and what it holds."""

    table: str
    month: str
    partition: str
    key: str
    manifest_key: str
    rows: int
    size: int
    sha256: str
    row_checksum: str
    pg_fingerprint: str
    reused: bool = False
    dropped: bool = False


class ArchiveVerificationError(RuntimeError):
    """An archive read back from object storage does not match what was written."""


def _manifests(store: ObjectStore, table: str, month: date) -> Iterator[dict]:
    prefix = f"archive/{table}/{month:%Y-%m}"
    for key in store.list(prefix):
        if key.endswith(".manifest.json"):
            with store.open(key) as stream:
                yield json.load(stream)


def _free_archive_key(store: ObjectStore, table: str, month: date) -> str:
    """``archive/<table>/<YYYY-MM>.parquet``, or ``...<YYYY-MM>.<n>.parquet`` when a month comes back
    after its first archive was dropped: an archive is never overwritten."""
    base = f"archive/{table}/{month:%Y-%m}"
    key, n = f"{base}.parquet", 0
    while store.size(key) is not None or store.size(manifest_key(key)) is not None:
        n += 1
        key = f"{base}.{n}.parquet"
    return key


@dataclass(frozen=True)
class WrittenArchive:
    """A Parquet archive as written: the stored object, and the rows and row checksum that went into it."""

    stored: StoredObject
    rows: int
    row_checksum: str


def write_parquet_archive(
    conn: Connection, store: ObjectStore, key: str, schema: pa.Schema, query: str, params: Mapping | None = None
) -> WrittenArchive:
    """Stream the rows of ``query`` (columns in ``schema``'s order) into a zstd Parquet object at ``key``,
    in batches of ARCHIVE_BATCH_ROWS (constant memory), checksumming every row as it is written."""
    checksum = RowChecksum()
    result = conn.execution_options(yield_per=ARCHIVE_BATCH_ROWS).execute(text(query), dict(params or {}))
    with staged_upload(store, key, "application/vnd.apache.parquet") as handle:
        with pq.ParquetWriter(handle, schema, compression="zstd") as writer:
            for batch in result.partitions(ARCHIVE_BATCH_ROWS):
                checksum.update(batch)
                columns = list(zip(*batch, strict=True))
                arrays = [pa.array(c, type=f.type) for c, f in zip(columns, schema, strict=True)]
                writer.write_batch(pa.record_batch(arrays, schema=schema))
    return WrittenArchive(handle.stored, checksum.rows, checksum.hexdigest())


def manifest_key(key: str) -> str:
    """Where the manifest of the archive at ``key`` is stored."""
    return key.removesuffix(".parquet") + ".manifest.json"


def verify_archive(store: ObjectStore, manifest: dict) -> None:
    """Read an archive back from object storage and check size, SHA-256, row count and row checksum."""
    with tempfile.TemporaryFile(prefix="observatory-archive-") as local:
        size, sha256 = read_hashed(store, manifest["key"], into=local)
        if size != manifest["size"] or sha256 != manifest["sha256"]:
            raise ArchiveVerificationError(
                f"{manifest['key']}: object is {size} bytes with SHA-256 {sha256[:12]}…, "
                f"the manifest says {manifest['size']} bytes, {manifest['sha256'][:12]}…"
            )
        local.seek(0)
        checksum = RowChecksum()
        for batch in pq.ParquetFile(local).iter_batches(batch_size=ARCHIVE_BATCH_ROWS):
            columns = [column.to_pylist() for column in batch.columns]
            checksum.update(zip(*columns, strict=True))
    if checksum.rows != manifest["rows"] or checksum.hexdigest() != manifest["row_checksum"]:
        raise ArchiveVerificationError(
            f"{manifest['key']}: read back {checksum.rows} rows (checksum {checksum.hexdigest()[:12]}…), "
            f"the manifest says {manifest['rows']} rows ({manifest['row_checksum'][:12]}…)"
        )


def archive_month(engine: Engine, store: ObjectStore, table: str, month: date) -> ArchiveResult:
    """Write one month of ``table`` to Parquet in object storage with its manifest and verify it by
    reading it back. Idempotent: an existing archive of exactly these rows is verified and reused."""
    month = month_start(month)
    partition = month_partition_name(_checked_table(table), month)
    with engine.connect().execution_options(isolation_level="REPEATABLE READ") as conn, conn.begin():
        if month not in month_partitions(conn, table):
            raise ValueError(f"{partition} is not an attached partition of {table}")
        rows, fingerprint = table_fingerprint(conn, partition)
        for manifest in _manifests(store, table, month):
            if manifest.get("pg_fingerprint") == fingerprint and manifest["rows"] == rows:
                verify_archive(store, manifest)
                return ArchiveResult(
                    **{k: manifest[k] for k in ArchiveResult.__dataclass_fields__ if k in manifest}, reused=True
                )
        select, schema = _archive_columns(conn, table)
        key = _free_archive_key(store, table, month)
        written = write_parquet_archive(
            conn, store, key, schema, f"SELECT {', '.join(select)} FROM ONLY {identifier(partition)}"
        )
    if written.rows != rows:
        raise ArchiveVerificationError(f"{partition}: streamed {written.rows} rows, counted {rows}")
    manifest = {
        "table": table, "month": f"{month:%Y-%m}", "partition": partition, "key": key,
        "manifest_key": manifest_key(key),
        "rows": rows, "size": written.stored.size, "sha256": written.stored.sha256,
        "row_checksum": written.row_checksum,
        "pg_fingerprint": fingerprint, "columns": schema.names, "archived_at": datetime.now(UTC).isoformat(),
    }  # fmt: skip
    verify_archive(store, manifest)
    put_bytes(store, manifest["manifest_key"], json.dumps(manifest, indent=2).encode(), "application/json")
    return ArchiveResult(**{k: manifest[k] for k in ArchiveResult.__dataclass_fields__ if k in manifest})


class PartitionChangedError(RuntimeError):
    """The partition no longer holds exactly the archived rows; it is kept and archived again later."""


def drop_archived_month(engine: Engine, archive: ArchiveResult, lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S) -> None:
    """Detach and drop an archived month, in one transaction that first locks the partition and
    proves (row count and PostgreSQL fingerprint) that it still holds exactly what was archived."""
    partition = identifier(archive.partition)
    with engine.begin() as conn:
        set_lock_timeout(conn, lock_timeout_s)
        conn.execute(text(f"LOCK TABLE {partition} IN ACCESS EXCLUSIVE MODE"))
        rows, fingerprint = table_fingerprint(conn, archive.partition)
        if rows != archive.rows or fingerprint != archive.pg_fingerprint:
            raise PartitionChangedError(
                f"{archive.partition} changed since it was archived ({rows} rows now, {archive.rows} archived); kept"
            )
        # as the schema's owner (migration 0005): the application role has no DDL rights
        conn.execute(text("SELECT drop_month_partition(CAST(:p AS regclass))"), {"p": archive.partition})
    archive.dropped = True


def _mark_dropped(store: ObjectStore, archive: ArchiveResult) -> None:
    """Record in the manifest that the archive is now the only copy of its rows. An archive without
    ``dropped_at`` is a snapshot of a partition that is still in the database."""
    with store.open(archive.manifest_key) as stream:
        manifest = json.load(stream)
    manifest["dropped_at"] = datetime.now(UTC).isoformat()
    put_bytes(store, archive.manifest_key, json.dumps(manifest, indent=2).encode(), "application/json")


def expired_months(engine: Engine, table: str, retention_months: int | None, today: date | None = None) -> list[date]:
    """Months of ``table`` older than its retention (none when retention is unset or 0)."""
    if not retention_months:
        return []
    cutoff = add_months(month_start(today or _today()), -retention_months)
    with engine.connect() as conn:
        return sorted(m for m in month_partitions(conn, table) if m < cutoff)


@dataclass
class PayloadArchiveResult:
    """The raw payloads of one collection run, moved under ``archive/collection_runs/<run>/``."""

    run_id: int
    manifest_key: str
    objects: int
    bytes: int


def archive_collection_payloads(engine: Engine, store: ObjectStore, run_id: int) -> PayloadArchiveResult:
    """Copy a run's payloads under ``archive/collection_runs/<run>/``, verify each copy read back
    against the SHA-256 recorded when it was collected, write the manifest, and only then delete
    the originals; ``rejected_items.payload_key`` then names the archived copy. Idempotent: a payload already moved is verified in its archive place. The run
    can no longer be re-ingested without copying its payloads back (the manifest lists both keys)."""
    with engine.connect() as conn:
        payloads = conn.execute(
            text("SELECT payloads FROM collection_runs WHERE id = :id"), {"id": run_id}
        ).scalar_one()
    entries = []
    for payload in payloads:
        archived = f"archive/{payload['key']}"
        if store.size(payload["key"]) is not None:
            with store.open(payload["key"]) as stream:
                store.put_stream(archived, stream)
        elif store.size(archived) is None:
            raise ArchiveVerificationError(f"payload {payload['key']} of collection run {run_id} is missing")
        size, sha256 = read_hashed(store, archived)
        if sha256 != payload["sha256"]:
            raise ArchiveVerificationError(
                f"{archived}: SHA-256 {sha256[:12]}… differs from the collected {payload['sha256'][:12]}…"
            )
        entries.append(
            {
                "key": payload["key"],
                "archived_key": archived,
                "size": size,
                "sha256": sha256,
                "records": payload.get("records"),
            }
        )
    manifest_key = f"archive/collection_runs/{run_id}.manifest.json"
    manifest = {"collection_run": run_id, "payloads": entries, "archived_at": datetime.now(UTC).isoformat()}
    put_bytes(store, manifest_key, json.dumps(manifest, indent=2).encode(), "application/json")
    with engine.begin() as conn:  # quarantined rows point at the payload that holds them in full
        for entry in entries:
            conn.execute(
                text(
                    "UPDATE rejected_items SET payload_key = :archived WHERE collection_run_id = :run AND payload_key = :key"
                ),
                {"archived": entry["archived_key"], "run": run_id, "key": entry["key"]},
            )
    for entry in entries:
        store.delete(entry["key"])
    return PayloadArchiveResult(run_id, manifest_key, len(entries), sum(e["size"] for e in entries))


def expired_collection_runs(
    engine: Engine, store: ObjectStore, retention_months: int | None, today: date | None = None
) -> list[int]:
    """Ingested collection runs completed before the payload retention whose payloads are not archived yet."""
    if not retention_months:
        return []
    cutoff = add_months(month_start(today or _today()), -retention_months)
    with engine.connect() as conn:
        runs = (
            conn.execute(
                text(
                    "SELECT id FROM collection_runs WHERE status = :completed AND ingested_at IS NOT NULL "
                    "AND completed_at < :cutoff ORDER BY id"
                ),
                {"cutoff": cutoff, "completed": CollectionRunStatus.COMPLETED},
            )
            .scalars()
            .all()
        )
    return [r for r in runs if store.size(f"archive/collection_runs/{r}.manifest.json") is None]


#: The environment variable that sets each retention, overridden by run config.
RETENTION_VARIABLES = {
    name: variable(f"retention_{name}_months") for name in (*PARTITIONED_TABLES, COLLECTION_PAYLOADS)
}


def retention_from_env(env: Mapping[str, str] | None = None) -> dict[str, int]:
    """The retention set by ``OBSERVATORY_RETENTION_*_MONTHS`` (unset or 0 keeps everything)."""
    settings = platform_settings(None if env is None else dict(env))
    return {name: months for name in RETENTION_VARIABLES if (months := getattr(settings, f"retention_{name}_months"))}


@dataclass
class RetentionResult:
    """What retention archived and dropped, and what it had to keep (with the reason)."""

    archived: list[ArchiveResult] = field(default_factory=list)
    payload_runs: list[PayloadArchiveResult] = field(default_factory=list)
    kept: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


def apply_retention(
    engine: Engine,
    store: ObjectStore,
    retention_months: dict[str, int],
    today: date | None = None,
    lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S,
) -> RetentionResult:
    """Archive, verify and drop every month older than its table's retention, and archive the payloads
    of collection runs older than the ``collection_payloads`` retention. A month or run that fails
    (upload, verification, a change since archiving, a busy lock) stays in place and is listed in
    ``kept``; the others proceed."""
    unknown = set(retention_months) - {*PARTITIONED_TABLES, COLLECTION_PAYLOADS}
    if unknown:
        raise ValueError(f"unknown retention keys {sorted(unknown)}; use {[*PARTITIONED_TABLES, COLLECTION_PAYLOADS]}")
    started = time.perf_counter()
    result = RetentionResult()
    for table in PARTITIONED_TABLES:
        for month in expired_months(engine, table, retention_months.get(table), today):
            try:
                archive = archive_month(engine, store, table, month)
                result.archived.append(archive)
                drop_archived_month(engine, archive, lock_timeout_s)
                _mark_dropped(store, archive)
            except Exception as error:  # the month stays; the failure is reported and fails the run
                result.kept[month_partition_name(table, month)] = failure_message(error)
    for run_id in expired_collection_runs(engine, store, retention_months.get(COLLECTION_PAYLOADS), today):
        try:
            result.payload_runs.append(archive_collection_payloads(engine, store, run_id))
        except Exception as error:
            result.kept[f"collection_runs/{run_id}"] = failure_message(error)
    result.seconds = time.perf_counter() - started
    return result


# --- Dagster ---------------------------------------------------------------------------------------------
