"""SQL helpers every domain shares: quoted identifiers, lock timeouts, month partitions.

Identifiers built at run time (table and partition names) always go through
:func:`identifier` (``psycopg.sql.Identifier``); values always go as parameters.
"""

from __future__ import annotations

from datetime import date, datetime

from psycopg import sql
from sqlalchemy import Connection, text


def identifier(name: str) -> str:
    """``name`` quoted as a PostgreSQL identifier, for SQL text built at run time."""
    return sql.Identifier(name).as_string()


def set_lock_timeout(conn: Connection, seconds: float) -> None:
    """Fail (SQLSTATE 55P03) instead of waiting longer than ``seconds`` for a lock, for the current
    transaction only: maintenance must never queue ingestion behind it for long."""
    conn.execute(text("SELECT set_config('lock_timeout', :ms, true)"), {"ms": f"{max(1, int(seconds * 1000))}ms"})


def month_partition_name(table: str, month: date) -> str:
    """The name ``ensure_month_partition`` gives the partition of ``table`` for ``month``."""
    return f"{table}_{month:%Y_%m}"


def ensure_month_partition(conn: Connection, table: str, month: date) -> bool:
    """Create the month's partition of ``table`` (moving its rows out of DEFAULT) unless it exists;
    True when it was created. One definition, in SQL, shared by ingestion and the rollover."""
    return bool(
        conn.execute(text("SELECT ensure_month_partition(CAST(:t AS regclass), :m)"), {"t": table, "m": month}).scalar()
    )


def database_now(conn: Connection) -> datetime:
    """The database server's clock (its transaction start): the time rows written by the database carry."""
    return conn.execute(text("SELECT now()")).scalar_one()
