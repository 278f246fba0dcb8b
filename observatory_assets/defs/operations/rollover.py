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

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import OperationalError

from observatory_assets.lib.sql import ensure_month_partition, identifier, month_partition_name, set_lock_timeout

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


def _today() -> date:
    return datetime.now(UTC).date()


def _checked_table(table: str) -> str:
    if table not in PARTITIONED_TABLES:
        raise ValueError(f"{table!r} is not a month-partitioned table ({', '.join(PARTITIONED_TABLES)})")
    return table


@dataclass(frozen=True)
class PartitionKey:
    """The partition key column of a table and the SQL that maps it to its month (UTC)."""

    column: str
    is_timestamp: bool

    @property
    def month_expr(self) -> str:
        column = identifier(self.column)
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
        text(f"SELECT {key.month_expr} AS month, count(*) FROM {identifier(table + '_default')} GROUP BY 1")
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


def partition_health(
    engine: Engine, table: str, months_ahead: int = DEFAULT_MONTHS_AHEAD, today: date | None = None
) -> PartitionHealth:
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
        set_lock_timeout(conn, lock_timeout_s)
        created = ensure_month_partition(conn, table, month)
        if not created:
            return False, 0
        moved = conn.execute(
            text(f"SELECT count(*) FROM {identifier(month_partition_name(table, month))}")
        ).scalar_one()
        return True, moved


def roll_over(
    engine: Engine,
    months_ahead: int = DEFAULT_MONTHS_AHEAD,
    today: date | None = None,
    tables: Iterable[str] = PARTITIONED_TABLES,
    lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S,
) -> RolloverResult:
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
            name = month_partition_name(table, month)
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
