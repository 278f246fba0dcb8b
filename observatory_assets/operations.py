"""Operations: monthly partitions rolled ahead, and retention that archives before it drops.

``raw_items`` (by ``published_at``) and ``trend_snapshots`` (by ``snapshot_date``)
are partitioned by month with a DEFAULT partition. The daily ``partition_rollover``
job keeps them healthy:

* **rollover** — the current month and the next ``months_ahead`` months exist as
  ``<table>_YYYY_MM`` partitions (with the parent's indexes); dated rows that
  landed in ``<table>_default`` are moved into their month. Both go through the
  SQL function ``ensure_month_partition`` (one short transaction per month, so
  ingestion is never blocked for longer than one month's move);
* **retention** — a month older than the table's retention is first written to
  ``archive/<table>/<YYYY-MM>.parquet`` with a JSON manifest (row count, SHA-256
  of the object, checksum of the rows), read back from object storage and
  verified, and only then dropped — under a lock, after proving that the
  partition still holds exactly the archived rows. Nothing unarchived is ever
  dropped. Raw payloads of old collection runs follow the same rule: copied under
  ``archive/collection_runs/<run>/``, verified against the SHA-256 recorded at
  collection, and only then deleted from ``collection_runs/<run>/``.

Retention is per table (months; unset or 0 keeps everything, the default).
"""

import hashlib
import json
import re
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import OperationalError

from resources import ObjectStoreResource, PostgresResource
from resources.object_store import ObjectStore, put_bytes, staged_upload

OPERATIONS = "operations"
#: The month-partitioned tables this module manages.
PARTITIONED_TABLES = ("raw_items", "trend_snapshots")
#: Retention key for the raw payloads of collection runs (alongside the table names).
COLLECTION_PAYLOADS = "collection_payloads"
DEFAULT_MONTHS_AHEAD = 3
ARCHIVE_BATCH_ROWS = 20_000
#: Ingestion must never wait long behind a rollover: a month that cannot be locked in time is left for the next run.
DEFAULT_LOCK_TIMEOUT_S = 10.0

_PARTITION_NAME = re.compile(r"^(?P<table>[a-z_]+)_(?P<year>\d{4})_(?P<month>\d{2})$")


def month_start(day: date) -> date:
    return date(day.year, day.month, 1)


def add_months(month: date, count: int) -> date:
    index = month.year * 12 + month.month - 1 + count
    return date(index // 12, index % 12 + 1, 1)


def partition_name(table: str, month: date) -> str:
    return f"{table}_{month:%Y_%m}"


def _today() -> date:
    return datetime.now(UTC).date()


def _checked_table(table: str) -> str:
    if table not in PARTITIONED_TABLES:
        raise ValueError(f"{table!r} is not a month-partitioned table ({', '.join(PARTITIONED_TABLES)})")
    return table


def _quoted(identifier: str) -> str:
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", identifier):
        raise ValueError(f"not a plain identifier: {identifier!r}")
    return f'"{identifier}"'


@dataclass(frozen=True)
class PartitionKey:
    """The partition key column of a table and the SQL that maps it to its month (UTC)."""

    column: str
    is_timestamp: bool

    @property
    def month_expr(self) -> str:
        column = _quoted(self.column)
        value = f"({column} AT TIME ZONE 'UTC')" if self.is_timestamp else f"{column}::timestamp"
        return f"date_trunc('month', {value})::date"


def partition_key(conn: Connection, table: str) -> PartitionKey:
    column, type_name = conn.execute(
        text(
            """
            SELECT a.attname, format_type(a.atttypid, NULL)
              FROM pg_partitioned_table p
              JOIN pg_attribute a ON a.attrelid = p.partrelid AND a.attnum = p.partattrs[0]
             WHERE p.partrelid = CAST(:t AS regclass)
            """
        ),
        {"t": _checked_table(table)},
    ).one()
    return PartitionKey(column, type_name.startswith("timestamp"))


def month_partitions(conn: Connection, table: str) -> dict[date, str]:
    """The attached monthly partitions of ``table`` by month (DEFAULT excluded)."""
    names = conn.execute(
        text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = CAST(:t AS regclass)"
        ),
        {"t": _checked_table(table)},
    ).scalars()
    months = {}
    for name in names:
        match = _PARTITION_NAME.match(name)
        if match and match["table"] == table:
            months[date(int(match["year"]), int(match["month"]), 1)] = name
    return months


def default_rows(conn: Connection, table: str) -> tuple[dict[date, int], int]:
    """Rows waiting in ``<table>_default``: (dated rows by month, rows without a key value)."""
    key = partition_key(conn, table)
    rows = conn.execute(
        text(f"SELECT {key.month_expr} AS month, count(*) FROM {_quoted(table + '_default')} GROUP BY 1")
    ).all()
    return {m: n for m, n in rows if m is not None}, sum(n for m, n in rows if m is None)


@dataclass
class PartitionHealth:
    """How ready a table is: months from now that exist, and what waits in DEFAULT."""

    table: str
    months_ready_ahead: int
    missing_months: list[str]
    default_dated_rows: int
    default_undated_rows: int


def partition_health(engine: Engine, table: str, months_ahead: int = DEFAULT_MONTHS_AHEAD,
                     today: date | None = None) -> PartitionHealth:
    """Count the consecutive months after the current one that have partitions, list the missing
    ones from the current month up to ``months_ahead``, and count DEFAULT's rows."""
    current = month_start(today or _today())
    with engine.connect() as conn:
        existing = month_partitions(conn, table)
        dated, undated = default_rows(conn, table)
    wanted = [add_months(current, step) for step in range(months_ahead + 1)]
    ready = 0
    while add_months(current, ready) in existing:
        ready += 1
    return PartitionHealth(
        table=table,
        months_ready_ahead=max(ready - 1, 0),
        missing_months=[f"{m:%Y-%m}" for m in wanted if m not in existing],
        default_dated_rows=sum(dated.values()),
        default_undated_rows=undated,
    )


@dataclass
class RolloverResult:
    """What one rollover did, per partition name."""

    created: list[str] = field(default_factory=list)
    moved_rows: dict[str, int] = field(default_factory=dict)
    busy: list[str] = field(default_factory=list)
    seconds: float = 0.0


def _ensure_month(engine: Engine, table: str, month: date, lock_timeout_s: float) -> tuple[bool, int]:
    """Create one month through ``ensure_month_partition``; (created, rows moved from DEFAULT).

    The count runs in the creating transaction, so the new partition holds only moved rows."""
    with engine.begin() as conn:
        conn.execute(text("SELECT set_config('lock_timeout', :ms, true)"), {"ms": f"{int(lock_timeout_s * 1000)}ms"})
        created = conn.execute(
            text("SELECT ensure_month_partition(CAST(:t AS regclass), :m)"), {"t": table, "m": month}
        ).scalar_one()
        if not created:
            return False, 0
        moved = conn.execute(text(f"SELECT count(*) FROM {_quoted(partition_name(table, month))}")).scalar_one()
        return True, moved


def roll_over(engine: Engine, months_ahead: int = DEFAULT_MONTHS_AHEAD, today: date | None = None,
              tables: Iterable[str] = PARTITIONED_TABLES, lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S) -> RolloverResult:
    """Create the current and the next ``months_ahead`` months of every table, and every month
    that has rows waiting in DEFAULT (moving them in). Idempotent: a second call changes nothing.
    A month whose lock is not granted within ``lock_timeout_s`` is reported in ``busy``."""
    if months_ahead < 0:
        raise ValueError("months_ahead must be 0 or more")
    started = time.perf_counter()
    current = month_start(today or _today())
    result = RolloverResult()
    for table in tables:
        with engine.connect() as conn:
            existing = month_partitions(conn, table)
            waiting, _ = default_rows(conn, table)
        wanted = {add_months(current, step) for step in range(months_ahead + 1)} | set(waiting)
        for month in sorted(wanted - set(existing)):
            name = partition_name(table, month)
            try:
                created, moved = _ensure_month(engine, table, month, lock_timeout_s)
            except OperationalError as error:
                if getattr(error.orig, "sqlstate", None) != "55P03":  # lock_not_available
                    raise
                result.busy.append(name)
                continue
            if created:
                result.created.append(name)
                if moved:
                    result.moved_rows[name] = moved
    result.seconds = time.perf_counter() - started
    return result


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
        select.append(_quoted(name) if arrow_type else f"{_quoted(name)}::text")
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
            f"FROM {'ONLY ' if only else ''}{_quoted(table)} t"
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
    while store.size(key) is not None or store.size(key.removesuffix(".parquet") + ".manifest.json") is not None:
        n += 1
        key = f"{base}.{n}.parquet"
    return key


def verify_archive(store: ObjectStore, manifest: dict) -> None:
    """Read an archive back from object storage and check size, SHA-256, row count and row checksum."""
    digest = hashlib.sha256()
    size = 0
    with tempfile.TemporaryFile(prefix="observatory-archive-") as local:
        with store.open(manifest["key"]) as stream:
            while chunk := stream.read(1024 * 1024):
                digest.update(chunk)
                size += len(chunk)
                local.write(chunk)
        if size != manifest["size"] or digest.hexdigest() != manifest["sha256"]:
            raise ArchiveVerificationError(
                f"{manifest['key']}: object is {size} bytes with SHA-256 {digest.hexdigest()[:12]}…, "
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
    partition = partition_name(_checked_table(table), month)
    with engine.connect().execution_options(isolation_level="REPEATABLE READ") as conn, conn.begin():
        if month not in month_partitions(conn, table):
            raise ValueError(f"{partition} is not an attached partition of {table}")
        rows, fingerprint = table_fingerprint(conn, partition)
        for manifest in _manifests(store, table, month):
            if manifest.get("pg_fingerprint") == fingerprint and manifest["rows"] == rows:
                verify_archive(store, manifest)
                return ArchiveResult(**{k: manifest[k] for k in ArchiveResult.__dataclass_fields__ if k in manifest},
                                     reused=True)
        select, schema = _archive_columns(conn, table)
        key = _free_archive_key(store, table, month)
        checksum = RowChecksum()
        result = conn.execution_options(yield_per=ARCHIVE_BATCH_ROWS).execute(
            text(f"SELECT {', '.join(select)} FROM ONLY {_quoted(partition)}")
        )
        with staged_upload(store, key, "application/vnd.apache.parquet") as handle:
            with pq.ParquetWriter(handle, schema, compression="zstd") as writer:
                for batch in result.partitions():
                    checksum.update(batch)
                    columns = list(zip(*batch, strict=True))
                    writer.write_batch(
                        pa.record_batch([pa.array(c, type=f.type) for c, f in zip(columns, schema, strict=True)],
                                        schema=schema)
                    )
    stored = handle.stored
    if checksum.rows != rows:
        raise ArchiveVerificationError(f"{partition}: streamed {checksum.rows} rows, counted {rows}")
    manifest = {
        "table": table, "month": f"{month:%Y-%m}", "partition": partition, "key": key,
        "manifest_key": key.removesuffix(".parquet") + ".manifest.json",
        "rows": rows, "size": stored.size, "sha256": stored.sha256, "row_checksum": checksum.hexdigest(),
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
    partition = _quoted(archive.partition)
    with engine.begin() as conn:
        conn.execute(text("SELECT set_config('lock_timeout', :ms, true)"), {"ms": f"{int(lock_timeout_s * 1000)}ms"})
        conn.execute(text(f"LOCK TABLE {partition} IN ACCESS EXCLUSIVE MODE"))
        rows, fingerprint = table_fingerprint(conn, archive.partition)
        if rows != archive.rows or fingerprint != archive.pg_fingerprint:
            raise PartitionChangedError(
                f"{archive.partition} changed since it was archived ({rows} rows now, {archive.rows} archived); kept"
            )
        conn.execute(text(f"ALTER TABLE {_quoted(archive.table)} DETACH PARTITION {partition}"))
        conn.execute(text(f"DROP TABLE {partition}"))
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


def _sha256_of(store: ObjectStore, key: str) -> tuple[int, str]:
    digest, size = hashlib.sha256(), 0
    with store.open(key) as stream:
        while chunk := stream.read(1024 * 1024):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def archive_collection_payloads(engine: Engine, store: ObjectStore, run_id: int) -> PayloadArchiveResult:
    """Copy a run's payloads under ``archive/collection_runs/<run>/``, verify each copy read back
    against the SHA-256 recorded when it was collected, write the manifest, and only then delete
    the originals. Idempotent: a payload already moved is verified in its archive place. The run
    can no longer be re-ingested without copying its payloads back (the manifest lists both keys)."""
    with engine.connect() as conn:
        payloads = conn.execute(text("SELECT payloads FROM collection_runs WHERE id = :id"), {"id": run_id}).scalar_one()
    entries = []
    for payload in payloads:
        archived = f"archive/{payload['key']}"
        if store.size(payload["key"]) is not None:
            with store.open(payload["key"]) as stream:
                store.put_stream(archived, stream)
        elif store.size(archived) is None:
            raise ArchiveVerificationError(f"payload {payload['key']} of collection run {run_id} is missing")
        size, sha256 = _sha256_of(store, archived)
        if sha256 != payload["sha256"]:
            raise ArchiveVerificationError(
                f"{archived}: SHA-256 {sha256[:12]}… differs from the collected {payload['sha256'][:12]}…"
            )
        entries.append({"key": payload["key"], "archived_key": archived, "size": size, "sha256": sha256,
                        "records": payload.get("records")})
    manifest_key = f"archive/collection_runs/{run_id}.manifest.json"
    manifest = {"collection_run": run_id, "payloads": entries, "archived_at": datetime.now(UTC).isoformat()}
    put_bytes(store, manifest_key, json.dumps(manifest, indent=2).encode(), "application/json")
    for entry in entries:
        store.delete(entry["key"])
    return PayloadArchiveResult(run_id, manifest_key, len(entries), sum(e["size"] for e in entries))


def expired_collection_runs(engine: Engine, store: ObjectStore, retention_months: int | None,
                            today: date | None = None) -> list[int]:
    """Ingested collection runs completed before the payload retention whose payloads are not archived yet."""
    if not retention_months:
        return []
    cutoff = add_months(month_start(today or _today()), -retention_months)
    with engine.connect() as conn:
        runs = conn.execute(
            text(
                "SELECT id FROM collection_runs WHERE status = 'completed' AND ingested_at IS NOT NULL "
                "AND completed_at < :cutoff ORDER BY id"
            ),
            {"cutoff": cutoff},
        ).scalars().all()
    return [r for r in runs if store.size(f"archive/collection_runs/{r}.manifest.json") is None]


@dataclass
class RetentionResult:
    """What retention archived and dropped, and what it had to keep (with the reason)."""

    archived: list[ArchiveResult] = field(default_factory=list)
    payload_runs: list[PayloadArchiveResult] = field(default_factory=list)
    kept: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


def apply_retention(engine: Engine, store: ObjectStore, retention_months: dict[str, int], today: date | None = None,
                    lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S) -> RetentionResult:
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
                result.kept[partition_name(table, month)] = f"{type(error).__name__}: {error}"
    for run_id in expired_collection_runs(engine, store, retention_months.get(COLLECTION_PAYLOADS), today):
        try:
            result.payload_runs.append(archive_collection_payloads(engine, store, run_id))
        except Exception as error:
            result.kept[f"collection_runs/{run_id}"] = f"{type(error).__name__}: {error}"
    result.seconds = time.perf_counter() - started
    return result


# --- Dagster ---------------------------------------------------------------------------------------------


class PartitionRolloverConfig(dg.Config):
    months_ahead: int = Field(default=DEFAULT_MONTHS_AHEAD, description="Months after the current one that must exist.")
    retention_months: dict[str, int] = Field(
        default={},
        description="Months to keep per table (raw_items, trend_snapshots) and for collection_payloads; "
        "unset or 0 keeps everything. Older months are archived to Parquet, verified, then dropped.",
    )
    lock_timeout_s: float = Field(default=DEFAULT_LOCK_TIMEOUT_S, description="Longest wait for a table lock.")


@dg.asset(
    group_name=OPERATIONS,
    kinds={"postgres", "parquet"},
    description="The monthly partitions of raw_items and trend_snapshots: the current and the next N months "
    "exist, DEFAULT holds no dated rows, months past retention are archived to Parquet and dropped.",
)
def monthly_partitions(
    context: dg.AssetExecutionContext,
    config: PartitionRolloverConfig,
    postgres: PostgresResource,
    object_store: ObjectStoreResource,
) -> dg.MaterializeResult:
    engine, store = postgres.get_engine(), object_store.get_store()
    rollover = roll_over(engine, config.months_ahead, lock_timeout_s=config.lock_timeout_s)
    retention = apply_retention(engine, store, config.retention_months, lock_timeout_s=config.lock_timeout_s)
    health = [partition_health(engine, table, config.months_ahead) for table in PARTITIONED_TABLES]
    with engine.connect() as conn:
        partitions = sum(len(month_partitions(conn, table)) for table in PARTITIONED_TABLES)
    archives = [
        {"partition": a.partition, "rows": a.rows, "key": a.key, "url": store.download_url(a.key), "dropped": a.dropped}
        for a in retention.archived
    ]
    metadata = {
        "dagster/row_count": dg.MetadataValue.int(partitions),
        "months_ahead": dg.MetadataValue.int(config.months_ahead),
        "retention_months": dg.MetadataValue.json(config.retention_months),
        "partitions_created": dg.MetadataValue.json(rollover.created),
        "rows_moved_from_default": dg.MetadataValue.json(rollover.moved_rows),
        "busy_skipped": dg.MetadataValue.json(rollover.busy),
        "health": dg.MetadataValue.json([asdict(h) for h in health]),
        "archived": dg.MetadataValue.json(archives),
        "payload_runs_archived": dg.MetadataValue.json([asdict(p) for p in retention.payload_runs]),
        "kept_after_failure": dg.MetadataValue.json(retention.kept),
        "rollover_seconds": dg.MetadataValue.float(round(rollover.seconds, 3)),
        "retention_seconds": dg.MetadataValue.float(round(retention.seconds, 3)),
    }
    if retention.kept:
        raise dg.Failure(
            description=f"retention kept {len(retention.kept)} item(s) in place after a failure: "
            + "; ".join(f"{k}: {v}" for k, v in retention.kept.items()),
            metadata=metadata,
        )
    context.log.info(f"created {len(rollover.created)} partition(s), archived {len(archives)} month(s)")
    return dg.MaterializeResult(metadata=metadata)


def _configured_months_ahead(context: dg.AssetCheckExecutionContext) -> int:
    event = context.instance.get_latest_materialization_event(monthly_partitions.key)
    recorded = event.asset_materialization.metadata.get("months_ahead") if event and event.asset_materialization else None
    return int(recorded.value) if recorded is not None else DEFAULT_MONTHS_AHEAD


@dg.asset_check(asset=monthly_partitions, description="The current month and the next N months exist for every table.")
def months_ready_ahead(context: dg.AssetCheckExecutionContext, postgres: PostgresResource) -> dg.AssetCheckResult:
    months_ahead = _configured_months_ahead(context)
    health = [partition_health(postgres.get_engine(), table, months_ahead) for table in PARTITIONED_TABLES]
    missing = {h.table: h.missing_months for h in health if h.missing_months}
    return dg.AssetCheckResult(
        passed=not missing,
        metadata={
            "months_ahead_required": months_ahead,
            "months_ready_ahead": dg.MetadataValue.json({h.table: h.months_ready_ahead for h in health}),
            "missing_months": dg.MetadataValue.json(missing),
        },
        description=None if not missing else "run the partition_rollover job",
    )


@dg.asset_check(
    asset=monthly_partitions,
    description="No DEFAULT partition holds dated rows (rows without a partition key value have nowhere else to go).",
)
def default_partitions_empty(postgres: PostgresResource) -> dg.AssetCheckResult:
    health = [partition_health(postgres.get_engine(), table) for table in PARTITIONED_TABLES]
    dated = {h.table: h.default_dated_rows for h in health}
    return dg.AssetCheckResult(
        passed=not any(dated.values()),
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "dated_rows_in_default": dg.MetadataValue.json(dated),
            "undated_rows_in_default": dg.MetadataValue.json({h.table: h.default_undated_rows for h in health}),
        },
        description=None if not any(dated.values()) else "run the partition_rollover job to move them into their months",
    )


partition_rollover_job = dg.define_asset_job(
    "partition_rollover",
    selection=dg.AssetSelection.assets(monthly_partitions),
    description="Roll monthly partitions ahead, empty DEFAULT, archive and drop months past retention.",
)

partition_rollover_schedule = dg.ScheduleDefinition(
    name="partition_rollover",
    job=partition_rollover_job,
    cron_schedule="15 0 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Daily partition rollover and retention (idempotent).",
)

defs = dg.Definitions(
    assets=[monthly_partitions],
    asset_checks=[months_ready_ahead, default_partitions_empty],
    jobs=[partition_rollover_job],
    schedules=[partition_rollover_schedule],
)
