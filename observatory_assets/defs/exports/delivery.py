"""Exports for researchers: the items they select, in the formats they open every day.

``content_exports`` writes the filtered items as CSV (UTF-8 with BOM, opens in
Excel with æøå intact), XLSX, NDJSON and Parquet; ``network_exports`` writes a
GEXF 1.3 actor co-occurrence network for Gephi; ``volume_exports`` the daily volume
statistics of query designs as CSV and Parquet. All stream from Postgres in
constant memory (``COPY ... TO STDOUT`` or a server-side cursor, one
REPEATABLE READ snapshot for all formats of a request), upload atomically to
object storage and record an ``exports`` row per (request, kind, format), so a
retried request replaces its own files and rows instead of adding new ones.

What is exported:

* **Selection** — ``raw_items`` joined to sources, collection runs and query
  designs, narrowed by :class:`ExportFilters`. Items withdrawn by a takedown
  (any request that is not cancelled, see :mod:`observatory_assets.lib.takedowns`)
  are never exported.
* **Columns** — item id, source, platform, arena, content type, title, text,
  url, author, author handle, published_at (UTC), engagement counts (likes,
  shares, comments, views: the item's own columns, filled at load from the
  usual collector names), language, collection run, query design, search
  terms matched, and with ``include_metadata`` the metadata JSON.
* **Spreadsheet safety** — in CSV and XLSX a text cell starting with ``=``,
  ``+``, ``-``, ``@``, tab or CR gets a leading apostrophe so it is never run
  as a formula; XLSX cells longer than Excel's limit are cut with a marker and
  rows beyond a sheet's limit continue on a new sheet.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, text

from observatory_assets.defs.exports.columns import (
    XLSX_MAX_ROWS,
    _iso_utc,
    content_query,
    export_columns,
    parquet_schema,
)
from observatory_assets.defs.exports.filters import (
    ExportFilterError,
    ExportFilters,
    driver_sql,
    selection,
    validate_filters,
)
from observatory_assets.defs.exports.network import MAX_AUTHORS_PER_CONTEXT, build_network, pseudonym_key, write_gexf
from observatory_assets.defs.exports.volumes import VOLUME_FORMATS, check_volume_filters, volume_query, volume_schema
from observatory_assets.defs.exports.writers import CONTENT_TYPES, write_csv, write_ndjson, write_parquet, write_xlsx
from observatory_assets.lib.audit import record_audit
from observatory_assets.lib.errors import failure_message
from observatory_assets.lib.outbox import EXPORT_COMPLETED, emit
from observatory_assets.lib.statuses import ExportStatus
from resources.object_store import ObjectStore, StoredObject, staged_upload

if TYPE_CHECKING:
    import networkx as nx

EXPORTS = "exports"
CONTENT_FORMATS = ("csv", "xlsx", "ndjson", "parquet")
DOWNLOAD_URL_EXPIRY = timedelta(hours=1)
_REQUEST_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


# ---------------------------------------------------------------- delivery and bookkeeping


@dataclass
class ExportResult:
    """One delivered file: its ``exports`` row, object, record count and where to download it."""

    export_id: int
    format: str
    object_key: str
    record_count: int
    size: int
    sha256: str
    download_url: str
    seconds: float
    details: dict[str, Any] = field(default_factory=dict)


def new_request_id(prefix: str = "cli") -> str:
    """A request id for an export started outside Dagster."""
    return f"{prefix}-{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"


def object_key(request_id: str, fmt: str, kind: str = "items") -> str:
    """Where a request's file of ``kind`` (items, network, volumes) lives; the same request always writes
    the same key."""
    return f"exports/{request_id}/{kind}.{fmt}"


def _check_request(request_id: str, formats: Iterable[str], allowed: tuple[str, ...]) -> list[str]:
    if not _REQUEST_ID.match(request_id or ""):
        raise ExportFilterError(f"request id {request_id!r} must be 1-100 letters, digits, '.', '_' or '-'")
    chosen = list(dict.fromkeys(formats))
    unknown = [f for f in chosen if f not in allowed]
    if unknown or not chosen:
        raise ExportFilterError(f"formats must be among {', '.join(allowed)}; got {', '.join(unknown) or 'none'}")
    return chosen


def _safe_error(error: BaseException) -> str:
    return failure_message(error)


def _start(engine: Engine, request_id: str, kind: str, fmt: str, filters: dict, key: str) -> int:
    with engine.begin() as conn:
        return conn.execute(
            text(
                """
                INSERT INTO exports (request_id, kind, format, filters, object_key)
                VALUES (:request_id, :kind, :format, CAST(:filters AS jsonb), :key)
                ON CONFLICT (request_id, kind, format) DO UPDATE
                   SET filters = EXCLUDED.filters, object_key = EXCLUDED.object_key, status = :running,
                       record_count = NULL, sha256 = NULL, error = NULL, created_at = now(), finished_at = NULL
                RETURNING id
                """
            ),
            {
                "request_id": request_id,
                "kind": kind,
                "format": fmt,
                "filters": json.dumps(filters),
                "key": key,
                "running": ExportStatus.RUNNING,
            },  # fmt: skip
        ).scalar_one()


def _finish(engine: Engine, export_id: int, stored: StoredObject, records: int, actor: str, details: dict) -> None:
    with engine.begin() as conn:
        conn.execute(
            text(
                """
                UPDATE exports SET status = :completed, record_count = :records, sha256 = :sha256,
                       finished_at = clock_timestamp()
                 WHERE id = :id
                """
            ),
            {"id": export_id, "records": records, "sha256": stored.sha256, "completed": ExportStatus.COMPLETED},
        )
        record_audit(
            conn, actor, "export", "exports", export_id,
            details={"object_key": stored.key, "records": records, "sha256": stored.sha256, **details},
        )  # fmt: skip
        emit(conn, EXPORT_COMPLETED, {"export": export_id, "object_key": stored.key, "records": records})


def _fail(engine: Engine, export_id: int, error: BaseException) -> None:
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE exports SET status = :failed, error = :error, finished_at = clock_timestamp() WHERE id = :id"),
            {"id": export_id, "error": _safe_error(error), "failed": ExportStatus.FAILED},
        )


class _Snapshot:
    """One read-only REPEATABLE READ transaction: every format of a request sees the same items."""

    def __init__(self, engine: Engine):
        self._engine = engine

    def __enter__(self):
        self._conn = self._engine.connect().execution_options(isolation_level="REPEATABLE READ")
        self._tx = self._conn.begin()
        self._conn.exec_driver_sql("SET TRANSACTION READ ONLY")
        # every row is read, so plan cursors for the whole result rather than the first rows
        self._conn.exec_driver_sql("SET LOCAL cursor_tuple_fraction = 1.0")
        return self._conn

    def __exit__(self, *exc) -> None:
        self._tx.rollback()
        self._conn.close()


def _deliver(
    engine: Engine,
    store: ObjectStore,
    request_id: str,
    fmt: str,
    filters: ExportFilters,
    actor: str,
    write: Callable[[str], tuple[StoredObject, int, dict]],
    kind: str = "items",
) -> ExportResult:
    """Record the export, run ``write(key)`` → (object, records, details), mark it completed or failed."""
    key = object_key(request_id, fmt, kind)
    export_id = _start(engine, request_id, kind, fmt, filters.as_json(), key)
    started = time.perf_counter()
    try:
        stored, records, details = write(key)
    except BaseException as error:
        _fail(engine, export_id, error)
        raise
    seconds = time.perf_counter() - started
    audited = {"kind": kind, "format": fmt, "filters": filters.as_json(), **details}
    _finish(engine, export_id, stored, records, actor, audited)
    return ExportResult(
        export_id, fmt, key, records, stored.size, stored.sha256, store.download_url(key, DOWNLOAD_URL_EXPIRY),
        seconds, details,
    )  # fmt: skip


def _deliver_formats(
    engine: Engine,
    store: ObjectStore,
    request_id: str,
    formats: list[str],
    filters: ExportFilters,
    actor: str,
    kind: str,
    write: Callable[[Any, str, str], tuple[StoredObject, int, dict]],
) -> list[ExportResult]:
    """Each of ``formats`` delivered from one consistent snapshot (the filters checked in it first):
    ``write(raw_connection, key, fmt)`` writes one file."""
    with _Snapshot(engine) as conn:
        validate_filters(conn, filters)
        raw = conn.connection.driver_connection
        return [
            _deliver(
                engine, store, request_id, fmt, filters, actor, lambda key, fmt=fmt: write(raw, key, fmt), kind=kind
            )
            for fmt in formats
        ]


def export_content(
    engine: Engine,
    store: ObjectStore,
    filters: ExportFilters,
    formats: Iterable[str] = CONTENT_FORMATS,
    request_id: str | None = None,
    include_metadata: bool = False,
    actor: str = "cli",
    max_rows_per_sheet: int = XLSX_MAX_ROWS,
) -> list[ExportResult]:
    """Export the selected items in each of ``formats``; all from one consistent snapshot.

    Filters, formats and the request id are checked before anything is written.
    Running the same ``request_id`` again replaces its files and ``exports`` rows.
    """
    request_id = request_id or new_request_id()
    chosen = _check_request(request_id, formats, CONTENT_FORMATS)
    return _deliver_formats(
        engine, store, request_id, chosen, filters, actor, "items",
        lambda raw, key, fmt: _write_content(raw, store, key, fmt, filters, include_metadata, max_rows_per_sheet),
    )  # fmt: skip


def _write_content(
    raw, store: ObjectStore, key: str, fmt: str, filters: ExportFilters, include_metadata: bool, max_rows_per_sheet: int
) -> tuple[StoredObject, int, dict]:
    """Write one content file under ``key``: (object, records, details)."""
    query, params = content_query(filters, fmt, include_metadata)
    if fmt in ("csv", "ndjson"):
        with raw.cursor() as cursor:
            stored, rows = (write_csv if fmt == "csv" else write_ndjson)(cursor, query, params, store, key)
        return stored, rows, {}
    details = {}
    with staged_upload(store, key, CONTENT_TYPES[fmt]) as handle:
        if fmt == "parquet":
            with raw.cursor() as cursor:
                rows = write_parquet(cursor, query, params, handle, parquet_schema(include_metadata))
        else:
            with raw.cursor(name=f"export_{uuid.uuid4().hex[:8]}") as cursor:
                rows, details["sheets"] = write_xlsx(
                    cursor, query, params, handle, export_columns(include_metadata), max_rows_per_sheet
                )
    return handle.stored, rows, details


def export_network(
    engine: Engine,
    store: ObjectStore,
    filters: ExportFilters,
    request_id: str | None = None,
    pseudonymize: bool = False,
    dynamic: bool = False,
    max_authors_per_context: int = MAX_AUTHORS_PER_CONTEXT,
    actor: str = "cli",
) -> tuple[ExportResult, nx.Graph]:
    """Export the actor co-occurrence network of the selection as GEXF 1.3 (see :func:`build_network`)."""
    import networkx as nx  # here, not with the module: every Dagster process loads the code location

    request_id = request_id or new_request_id()
    _check_request(request_id, ["gexf"], ("gexf",))
    secret = pseudonym_key() if pseudonymize else None
    if max_authors_per_context < 2:
        raise ExportFilterError("max_authors_per_context must be at least 2")
    graph = nx.Graph()
    with _Snapshot(engine) as conn:
        validate_filters(conn, filters)

        def write(key: str) -> tuple[StoredObject, int, dict]:
            nonlocal graph
            with conn.connection.driver_connection.cursor() as cursor:
                graph, stats = build_network(cursor, filters, secret, max_authors_per_context)
            description = f"Actor co-occurrence network ({stats.edge_basis}); filters: {json.dumps(filters.as_json())}"
            with staged_upload(store, key, CONTENT_TYPES["gexf"]) as handle:
                write_gexf(graph, handle, dynamic=dynamic, description=description)
            details = {
                "nodes": graph.number_of_nodes(),
                "edges": graph.number_of_edges(),
                "posts": stats.posts,
                "edge_basis": stats.edge_basis,
                "crowded_contexts_skipped": stats.crowded_contexts,
                "components": nx.number_connected_components(graph) if graph.number_of_nodes() else 0,
                "pseudonymized": pseudonymize,
                "dynamic": dynamic,
            }
            return handle.stored, graph.number_of_nodes(), details

        result = _deliver(engine, store, request_id, "gexf", filters, actor, write, kind="network")
    return result, graph


def export_volumes(
    engine: Engine,
    store: ObjectStore,
    filters: ExportFilters,
    formats: Iterable[str] = VOLUME_FORMATS,
    request_id: str | None = None,
    actor: str = "cli",
) -> list[ExportResult]:
    """Export the ``volume_stats`` rows of the filters' query designs and date range (see :mod:`.volumes`)
    as CSV and/or Parquet, streamed by ``COPY`` from one snapshot; the same ``request_id`` replaces its files."""
    request_id = request_id or new_request_id()
    chosen = _check_request(request_id, formats, VOLUME_FORMATS)
    check_volume_filters(filters)
    return _deliver_formats(
        engine, store, request_id, chosen, filters, actor, "volumes",
        lambda raw, key, fmt: _write_volumes(raw, store, key, fmt, filters),
    )  # fmt: skip


def _write_volumes(
    raw, store: ObjectStore, key: str, fmt: str, filters: ExportFilters
) -> tuple[StoredObject, int, dict]:
    query, params = volume_query(filters, fmt)
    with raw.cursor() as cursor:
        if fmt == "csv":
            stored, rows = write_csv(cursor, query, params, store, key)
            return stored, rows, {}
        with staged_upload(store, key, CONTENT_TYPES[fmt]) as handle:
            rows = write_parquet(cursor, query, params, handle, volume_schema())
    return handle.stored, rows, {}


def preview(engine: Engine, filters: ExportFilters, limit: int = 5) -> list[dict[str, str]]:
    """The first few selected items (id, source, published, title) for materialization metadata."""
    columns = (
        "r.id",
        "s.name AS source",
        f"{_iso_utc('r.published_at')} AS published_at",
        "left(r.title, 80) AS title",
    )
    query, params = driver_sql(selection(filters, *columns).limit(limit))
    with engine.connect() as conn, conn.connection.driver_connection.cursor() as cursor:
        cursor.execute(query, params)
        names = [d.name for d in cursor.description]
        return [{n: "" if v is None else str(v) for n, v in zip(names, row)} for row in cursor.fetchall()]


def recent_exports(conn: Connection, limit: int) -> list:
    """The ``limit`` latest exports, newest first: id, request, kind, format, status, records, object key,
    created."""
    return conn.execute(
        text("SELECT id, request_id, kind, format, status, record_count, object_key, created_at "
             "FROM exports ORDER BY id DESC LIMIT :limit"),
        {"limit": limit},
    ).all()  # fmt: skip


def completed_exports(conn: Connection) -> list[tuple[str, int, str]]:
    """(format, records, object key) of every completed export, oldest first."""
    rows = conn.execute(
        text("SELECT format, record_count, object_key FROM exports WHERE status = :completed ORDER BY id"),
        {"completed": ExportStatus.COMPLETED},
    ).all()
    return [(fmt, count, key) for fmt, count, key in rows]
