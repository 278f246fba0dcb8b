"""Exports for researchers: the items they select, in the formats they open every day.

``content_exports`` writes the filtered items as CSV (UTF-8 with BOM, opens in
Excel with æøå intact), XLSX, NDJSON and Parquet; ``network_exports`` writes a
GEXF 1.3 actor co-occurrence network for Gephi. Both stream from Postgres in
constant memory (``COPY ... TO STDOUT`` or a server-side cursor, one
REPEATABLE READ snapshot for all formats of a request), upload atomically to
object storage and record an ``exports`` row per (request, format), so a
retried request replaces its own files and rows instead of adding new ones.

What is exported:

* **Selection** — ``raw_items`` joined to sources, collection runs and query
  designs, narrowed by :class:`ExportFilters`. Items whose takedown request is
  ``done`` are never exported; an ``open`` request is still under review and
  does not remove the item (the publishing flow decides).
* **Columns** — item id, source, platform, arena, content type, title, text,
  url, author, published_at (UTC), engagement counts (likes, shares,
  comments, views, read from the item's metadata under the usual collector
  names), language, collection run, query design, search terms matched, and
  with ``include_metadata`` the metadata JSON.
* **Spreadsheet safety** — in CSV and XLSX a text cell starting with ``=``,
  ``+``, ``-``, ``@``, tab or CR gets a leading apostrophe so it is never run
  as a formula; XLSX cells longer than Excel's limit are cut with a marker and
  rows beyond a sheet's limit continue on a new sheet.
"""

import hashlib
import hmac
import io
import itertools
import json
import os
import queue
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, BinaryIO
from xml.sax.saxutils import escape, quoteattr

import dagster as dg
import networkx as nx
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from pydantic import Field
from sqlalchemy import Connection, Engine, text

from observatory_assets.ingestion import markdown_table
from resources import ObjectStoreResource, PostgresResource
from resources.object_store import ObjectStore, StoredObject, download_metadata, staged_upload

EXPORTS = "exports"

CONTENT_FORMATS = ("csv", "xlsx", "ndjson", "parquet")
_CONTENT_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "ndjson": "application/x-ndjson",
    "parquet": "application/vnd.apache.parquet",
    "gexf": "application/gexf+xml",
}

XLSX_MAX_CELL_CHARS = 32_767
XLSX_MAX_ROWS = 1_048_576  # per sheet, the header row included
TRUNCATION_MARKER = "…[truncated]"
PSEUDONYM_KEY_VARIABLE = "OBSERVATORY_PSEUDONYM_KEY"
DOWNLOAD_URL_EXPIRY = timedelta(hours=1)
#: A (run, term) or event context with more authors than this links nobody: a term everyone
#: uses says nothing about who acts together, and its pairs grow with the square of its size.
MAX_AUTHORS_PER_CONTEXT = 500

_FETCH_ROWS = 2_000
_PARQUET_BLOCK_BYTES = 8 * 1024 * 1024
_TERMS_SEPARATOR = "\x1f"
_LANGUAGE = re.compile(r"^[a-z]{2,3}(-[a-z0-9]{2,8})*$")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
_XML_ILLEGAL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
_CREDENTIALS_IN_URL = re.compile(r"(\w+://[^:/@\s]+:)[^@\s]+@")


class ExportFilterError(ValueError):
    """A filter or option that cannot be applied; raised before any work starts."""


# ---------------------------------------------------------------- filters


@dataclass(frozen=True)
class ExportFilters:
    """Which items a researcher asked for; every field narrows the selection, empty means all.

    ``published_from`` is inclusive and ``published_to`` exclusive (UTC); names
    are matched exactly; ``search_terms`` matches items that matched any of the
    terms; ``text_query`` is web-search syntax (``"exact phrase" -word or``)
    over title and text in the item's own language configuration.
    """

    published_from: datetime | None = None
    published_to: datetime | None = None
    sources: tuple[str, ...] = ()
    arenas: tuple[str, ...] = ()
    languages: tuple[str, ...] = ()
    query_designs: tuple[str, ...] = ()
    collection_runs: tuple[int, ...] = ()
    search_terms: tuple[str, ...] = ()
    text_query: str | None = None

    def as_json(self) -> dict[str, Any]:
        """The filters as recorded in ``exports.filters`` (only those that are set)."""
        out: dict[str, Any] = {}
        for name, value in self.__dict__.items():
            if isinstance(value, datetime):
                out[name] = value.isoformat()
            elif value not in (None, ()):
                out[name] = list(value) if isinstance(value, tuple) else value
        return out


def _parse_instant(name: str, value: str | date | datetime | None) -> datetime | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, date):
        parsed = datetime(value.year, value.month, value.day)
    else:
        raw = value.strip()
        try:
            parsed = datetime.fromisoformat(raw[:-1] + "+00:00" if raw.endswith("Z") else raw)
        except ValueError:
            raise ExportFilterError(f"{name}: {value!r} is not an ISO 8601 date or date-time") from None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)


def _names(name: str, values: Iterable[str] | None) -> tuple[str, ...]:
    cleaned = []
    for value in values or ():
        if not isinstance(value, str) or not value.strip():
            raise ExportFilterError(f"{name}: empty or non-text value {value!r}")
        cleaned.append(value.strip())
    return tuple(dict.fromkeys(cleaned))


def build_filters(
    published_from: str | date | datetime | None = None,
    published_to: str | date | datetime | None = None,
    sources: Iterable[str] | None = None,
    arenas: Iterable[str] | None = None,
    languages: Iterable[str] | None = None,
    query_designs: Iterable[str] | None = None,
    collection_runs: Iterable[int] | None = None,
    search_terms: Iterable[str] | None = None,
    text_query: str | None = None,
) -> ExportFilters:
    """Filters from what a person typed (config, CLI); raises :class:`ExportFilterError` on bad syntax."""
    start = _parse_instant("published_from", published_from)
    end = _parse_instant("published_to", published_to)
    if start and end and start >= end:
        raise ExportFilterError(f"published_from ({start.isoformat()}) must be before published_to ({end.isoformat()})")
    langs = tuple(lang.lower() for lang in _names("languages", languages))
    bad = [lang for lang in langs if not _LANGUAGE.match(lang)]
    if bad:
        raise ExportFilterError(f"languages: {', '.join(map(repr, bad))} are not language codes like 'da' or 'en'")
    runs = []
    for run in collection_runs or ():
        if isinstance(run, bool) or not isinstance(run, int) and not (isinstance(run, str) and run.isdigit()):
            raise ExportFilterError(f"collection_runs: {run!r} is not a run id")
        runs.append(int(run))
    query = text_query.strip() if text_query else None
    if query is not None and len(query) > 1000:
        raise ExportFilterError("text_query is longer than 1000 characters")
    return ExportFilters(
        published_from=start,
        published_to=end,
        sources=_names("sources", sources),
        arenas=_names("arenas", arenas),
        languages=langs,
        query_designs=_names("query_designs", query_designs),
        collection_runs=tuple(dict.fromkeys(runs)),
        search_terms=_names("search_terms", search_terms),
        text_query=query or None,
    )


_ARENA = "coalesce(s.config->>'arena', s.type)"

_KNOWN = {
    "sources": ("SELECT name FROM sources WHERE name = ANY(:values)", "source"),
    "arenas": (f"SELECT DISTINCT {_ARENA} FROM sources s WHERE {_ARENA} = ANY(:values)", "arena"),
    "query_designs": ("SELECT name FROM query_designs WHERE name = ANY(:values)", "query design"),
    "collection_runs": ("SELECT id FROM collection_runs WHERE id = ANY(:values)", "collection run"),
}


def validate_filters(conn: Connection, filters: ExportFilters) -> None:
    """Refuse names and ids that do not exist, so a typo is an error and not an empty export."""
    for name, (query, noun) in _KNOWN.items():
        wanted = getattr(filters, name)
        if not wanted:
            continue
        found = set(conn.execute(text(query), {"values": list(wanted)}).scalars())
        missing = [w for w in wanted if w not in found]
        if missing:
            raise ExportFilterError(f"unknown {noun}{'s' if len(missing) > 1 else ''}: {', '.join(map(str, missing))}")


SELECTION_FROM = """
  FROM raw_items r
  JOIN sources s ON s.id = r.source_id
  JOIN collection_runs cr ON cr.id = r.collection_run_id
  LEFT JOIN query_designs qd ON qd.id = cr.query_design_id
"""
#: Exports list items oldest first (undated last), ties broken by id, so a file's order is stable.
SELECTION_ORDER = "ORDER BY r.published_at NULLS LAST, r.id"

# The item's own text-search configuration, so 'klimaplanen' finds 'klimaplan' in Danish items;
# items that item_features has not reached yet are searched on the fly.
_TEXT_QUERY = (
    "coalesce(r.search_vector, to_tsvector(coalesce(r.text_search_config, 'simple'::regconfig), "
    "coalesce(r.title, '') || ' ' || coalesce(r.text, ''))) "
    "@@ websearch_to_tsquery(coalesce(r.text_search_config, 'simple'::regconfig), %(text_query)s)"
)


def selection_where(filters: ExportFilters) -> tuple[str, dict[str, Any]]:
    """The WHERE clause (psycopg ``%(name)s`` parameters) selecting the exportable items."""
    clauses = ["NOT EXISTS (SELECT 1 FROM takedown_requests t WHERE t.item_id = r.id AND t.status = 'done')"]
    params: dict[str, Any] = {}
    conditions = {
        "published_from": "r.published_at >= %(published_from)s",
        "published_to": "r.published_at < %(published_to)s",
        "sources": "s.name = ANY(%(sources)s)",
        "arenas": f"{_ARENA} = ANY(%(arenas)s)",
        "languages": "r.language = ANY(%(languages)s)",
        "query_designs": "qd.name = ANY(%(query_designs)s)",
        "collection_runs": "r.collection_run_id = ANY(%(collection_runs)s)",
        "search_terms": "r.search_terms_matched && %(search_terms)s::text[]",
        "text_query": _TEXT_QUERY,
    }
    for name, clause in conditions.items():
        value = getattr(filters, name)
        if value not in (None, ()):
            clauses.append(clause)
            params[name] = list(value) if isinstance(value, tuple) else value
    return " AND ".join(clauses), params


# ---------------------------------------------------------------- columns


def _count(*paths: str) -> str:
    """A non-negative whole count from the first metadata path that holds one (number or digit string)."""
    picks = []
    for path in paths:
        value = f"r.raw_metadata #> '{{{path}}}'"
        picks.append(
            f"CASE jsonb_typeof({value}) "
            f"WHEN 'number' THEN CASE WHEN ({value})::numeric BETWEEN 0 AND 9e18 THEN round(({value})::numeric)::bigint END "
            f"WHEN 'string' THEN CASE WHEN {value} #>> '{{}}' ~ '^[0-9]{{1,18}}$' THEN ({value} #>> '{{}}')::bigint END END"
        )
    return f"coalesce({', '.join(picks)})"


@dataclass(frozen=True)
class Column:
    """One exported column: its name, SQL, kind (text, count, time, terms, json), XLSX width."""

    name: str
    sql: str
    kind: str
    width: int


COLUMNS: tuple[Column, ...] = (
    Column("item_id", "r.id", "count", 10),
    Column("source", "s.name", "text", 18),
    Column("platform", "coalesce(r.raw_metadata->>'platform', s.type)", "text", 12),
    Column("arena", _ARENA, "text", 12),
    Column(
        "content_type",
        "coalesce(r.raw_metadata->>'content_type', CASE WHEN s.type IN ('rss', 'atom') THEN 'article' ELSE 'post' END)",
        "text",
        12,
    ),
    Column("title", "r.title", "text", 50),
    Column("text", "r.text", "text", 80),
    Column("url", "r.url", "text", 40),
    Column("author", "r.author", "text", 20),
    Column("published_at", "r.published_at", "time", 20),
    Column("likes", _count("likes", "like_count", "favorite_count", "stats,diggCount"), "count", 9),
    Column("shares", _count("shares", "share_count", "retweet_count", "stats,shareCount"), "count", 9),
    Column("comments", _count("comments", "comment_count", "reply_count", "stats,commentCount"), "count", 9),
    Column("views", _count("views", "view_count", "stats,playCount"), "count", 9),
    Column("language", "r.language", "text", 9),
    Column("collection_run", "r.collection_run_id", "count", 10),
    Column("query_design", "qd.name", "text", 18),
    Column("search_terms_matched", "r.search_terms_matched", "terms", 30),
)
METADATA_COLUMN = Column("metadata", "r.raw_metadata::text", "json", 60)

_ARROW_TYPES = {
    "text": pa.string(),
    "json": pa.string(),
    "count": pa.int64(),
    "time": pa.timestamp("us", tz="UTC"),
    "terms": pa.list_(pa.string()),
}


def export_columns(include_metadata: bool) -> tuple[Column, ...]:
    """The columns of a content export."""
    return (*COLUMNS, METADATA_COLUMN) if include_metadata else COLUMNS


def parquet_schema(include_metadata: bool) -> pa.Schema:
    """The explicit Parquet schema: strings, int64 counts, timestamp[us, UTC], list<string> terms."""
    return pa.schema([pa.field(c.name, _ARROW_TYPES[c.kind]) for c in export_columns(include_metadata)])


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _iso_utc(sql: str) -> str:
    return f"""to_char({sql} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"""


def _neutralized(sql: str) -> str:
    """A spreadsheet cannot run the value as a formula: risky first characters get an apostrophe."""
    return f"CASE WHEN ascii({sql}) IN (61, 43, 45, 64, 9, 13) THEN '''' || {sql} ELSE {sql} END"  # = + - @ TAB CR


def _xml_safe(sql: str) -> str:
    """Without the control characters XML 1.0 forbids (they would make the workbook unreadable)."""
    return f"regexp_replace({sql}, '[\\x01-\\x08\\x0b\\x0c\\x0e-\\x1f]', '', 'g')"


def _cut_to_cell(sql: str) -> str:
    """At most Excel's 32,767 characters per cell, the cut marked."""
    limit = XLSX_MAX_CELL_CHARS - len(TRUNCATION_MARKER)
    return f"CASE WHEN length({sql}) > {XLSX_MAX_CELL_CHARS} THEN left({sql}, {limit}) || '{TRUNCATION_MARKER}' ELSE {sql} END"


def _line_breaks_escaped(sql: str) -> str:
    """The value without raw line breaks, reversibly: RS becomes RS '0', LF RS '1', CR RS '2'.

    Arrow parses CSV without quoted line breaks several times faster; :func:`_unescape_line_breaks`
    restores the value.
    """
    return f"replace(replace(replace({sql}, chr(30), chr(30) || '0'), chr(10), chr(30) || '1'), chr(13), chr(30) || '2')"


def _unescape_line_breaks(column: pa.ChunkedArray) -> pa.ChunkedArray:
    # Every RS in an escaped value starts a two-character token, so replacing the tokens one
    # kind after another cannot match across tokens; RS itself comes back last.
    if not pc.any(pc.match_substring(column, "\x1e")).as_py():
        return column
    for token, original in (("\x1e1", "\n"), ("\x1e2", "\r"), ("\x1e0", "\x1e")):
        column = pc.replace_substring(column, token, original)
    return column


def _select_list(columns: Iterable[Column], fmt: str) -> str:
    """Each column's SQL rendered for ``fmt``."""
    rendered = []
    for column in columns:
        sql = column.sql
        if column.kind in ("text", "json") and fmt == "xlsx":
            sql = _xml_safe(sql)
        if column.kind == "text" and fmt in ("csv", "xlsx"):
            sql = _neutralized(sql)
        if column.kind in ("text", "json") and fmt == "xlsx":
            sql = _cut_to_cell(sql)
        if column.kind == "time":
            sql = f"date_trunc('second', {sql} AT TIME ZONE 'UTC')" if fmt == "xlsx" else _iso_utc(sql)
        if column.kind == "terms":
            if fmt == "parquet":
                sql = f"nullif(array_to_string({sql}, chr(31)), '')"
            elif fmt in ("csv", "xlsx"):
                sql = f"array_to_string({sql}, '; ')"
        if column.kind in ("text", "json", "terms") and fmt == "parquet":
            sql = _line_breaks_escaped(sql)
        rendered.append(f"{sql} AS {_quoted(column.name)}")
    return ",\n       ".join(rendered)


def content_query(filters: ExportFilters, fmt: str, include_metadata: bool = False) -> tuple[str, dict[str, Any]]:
    """The SELECT of a content export in ``fmt`` (oldest first), with its parameters."""
    where, params = selection_where(filters)
    columns = export_columns(include_metadata)
    if fmt == "ndjson":
        pairs = []
        for column in columns:
            value = column.sql
            if column.kind == "time":
                value = _iso_utc(value)
            elif column.kind == "json":
                value = "r.raw_metadata"
            pairs.append(f"'{column.name}', {value}")
        select = f"json_build_object({', '.join(pairs)})::text AS line"
    else:
        select = _select_list(columns, fmt)
    return f"SELECT {select}{SELECTION_FROM} WHERE {where} {SELECTION_ORDER}", params


# ---------------------------------------------------------------- streaming writers


class ChunkStream(io.RawIOBase):
    """A readable byte stream over an iterator of chunks, so uploads pull rows as they go."""

    def __init__(self, chunks: Iterable[bytes]):
        self._chunks = iter(chunks)
        self._pending = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        filled, size = 0, len(buffer)
        while filled < size:
            if not self._pending:
                chunk = next(self._chunks, None)
                if chunk is None:
                    break
                self._pending = memoryview(chunk).cast("B")
            n = min(size - filled, len(self._pending))
            buffer[filled : filled + n] = self._pending[:n]
            self._pending = self._pending[n:]
            filled += n
        return filled


_END = object()


class _Abandoned(Exception):
    """The consumer of a COPY stopped early."""


def copy_blocks(cursor, query: str, params: dict, options: str, block_bytes: int, ahead: int) -> Iterator[bytes]:
    """The output of ``COPY (query) TO STDOUT WITH (options)`` in blocks of about ``block_bytes``.

    A background thread drains the COPY up to ``ahead`` blocks ahead of the consumer, so
    Postgres keeps producing while the consumer writes, hashes or parses (all of which
    release the GIL); memory holds at most ``ahead + 2`` blocks. Closing the generator
    early cancels the COPY.
    """
    blocks: queue.Queue = queue.Queue(maxsize=ahead)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                blocks.put(item, timeout=0.1)
                return True
            except queue.Full:
                pass
        return False

    def produce() -> None:
        try:
            with cursor.copy(f"COPY ({query}) TO STDOUT WITH ({options})", params) as copy:
                pending: list = []
                size = 0
                for chunk in copy:
                    pending.append(chunk)
                    size += len(chunk)
                    if size >= block_bytes:
                        if not put(b"".join(pending)):
                            raise _Abandoned  # leaving the block cancels the COPY
                        pending, size = [], 0
                if pending:
                    put(b"".join(pending))
            put(_END)
        except _Abandoned:
            pass
        except BaseException as error:  # handed to the consumer, which raises it
            put(error)

    producer = threading.Thread(target=produce, name="copy-reader", daemon=True)
    producer.start()
    try:
        while (item := blocks.get()) is not _END:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        producer.join()


def write_csv(cursor, query: str, params: dict, store: ObjectStore, key: str) -> tuple[StoredObject, int]:
    """CSV (UTF-8 with BOM, RFC 4180 quoting, header) straight from ``COPY``; returns (object, rows)."""
    with closing(copy_blocks(cursor, query, params, "FORMAT csv, HEADER", 1 << 20, ahead=8)) as blocks:
        stream = io.BufferedReader(ChunkStream(itertools.chain([b"\xef\xbb\xbf"], blocks)), 1 << 20)
        stored = store.put_stream(key, stream, _CONTENT_TYPES["csv"])
    return stored, cursor.rowcount


def write_ndjson(cursor, query: str, params: dict, store: ObjectStore, key: str) -> tuple[StoredObject, int]:
    """One JSON object per line, serialized by Postgres; returns (object, rows).

    COPY's CSV mode with quote and delimiter characters that JSON text never holds
    raw (it escapes control characters) passes each line through unchanged.
    """
    options = "FORMAT csv, QUOTE E'\\x01', DELIMITER E'\\x02'"
    with closing(copy_blocks(cursor, query, params, options, 1 << 20, ahead=8)) as blocks:
        stored = store.put_stream(key, io.BufferedReader(ChunkStream(blocks), 1 << 20), _CONTENT_TYPES["ndjson"])
    return stored, cursor.rowcount


def write_parquet(cursor, query: str, params: dict, handle: BinaryIO, schema: pa.Schema) -> int:
    """Parquet with ``schema`` from ``COPY`` CSV, parsed by Arrow a block (one row group) at a time; returns rows."""
    terms = [f.name for f in schema if pa.types.is_list(f.type)]
    strings = [f.name for f in schema if pa.types.is_string(f.type) or f.name in terms]
    read = pacsv.ReadOptions(column_names=schema.names, use_threads=False)
    parse = pacsv.ParseOptions(newlines_in_values=False)  # the query escapes them (_line_breaks_escaped)
    convert = pacsv.ConvertOptions(
        column_types={f.name: (pa.string() if f.name in terms else f.type) for f in schema},
        strings_can_be_null=True,
        quoted_strings_can_be_null=False,
    )
    no_terms = pa.scalar([], type=pa.list_(pa.string()))
    rows = 0
    with (
        pq.ParquetWriter(handle, schema, compression="zstd") as writer,
        closing(copy_blocks(cursor, query, params, "FORMAT csv", _PARQUET_BLOCK_BYTES, ahead=1)) as blocks,
    ):
        for block in blocks:
            table = pacsv.read_csv(pa.py_buffer(block), read_options=read, parse_options=parse, convert_options=convert)
            for name in strings if b"\x1e" in block else ():  # most blocks hold no line break at all
                table = table.set_column(table.schema.get_field_index(name), name, _unescape_line_breaks(table[name]))
            for name in terms:
                split = pc.fill_null(pc.split_pattern(table[name], _TERMS_SEPARATOR), no_terms)
                table = table.set_column(table.schema.get_field_index(name), name, split)
            writer.write_table(table.cast(schema))
            rows += table.num_rows
    return rows


def write_xlsx(
    cursor, query: str, params: dict, handle: BinaryIO, columns: tuple[Column, ...], max_rows_per_sheet: int = XLSX_MAX_ROWS
) -> tuple[int, int]:
    """An XLSX workbook in openpyxl's write-only mode from a server-side cursor; returns (rows, sheets).

    Every sheet has a bold, frozen header and fixed column widths; after
    ``max_rows_per_sheet`` rows (header included) the items continue on a new sheet.
    """
    from openpyxl import Workbook
    from openpyxl.cell import WriteOnlyCell
    from openpyxl.styles import Font
    from openpyxl.utils import get_column_letter

    workbook = Workbook(write_only=True)
    bold = Font(bold=True)

    def new_sheet(number: int):
        sheet = workbook.create_sheet("items" if number == 1 else f"items ({number})")
        for index, column in enumerate(columns, start=1):
            sheet.column_dimensions[get_column_letter(index)].width = column.width
        sheet.freeze_panes = "A2"
        header = []
        for column in columns:
            cell = WriteOnlyCell(sheet, value=column.name)
            cell.font = bold
            header.append(cell)
        sheet.append(header)
        return sheet

    sheets, rows, on_sheet = 1, 0, 1
    sheet = new_sheet(sheets)
    cursor.execute(query, params)
    while batch := cursor.fetchmany(_FETCH_ROWS):
        for row in batch:
            if on_sheet == max_rows_per_sheet:
                sheets += 1
                sheet, on_sheet = new_sheet(sheets), 1
            sheet.append(row)
            on_sheet += 1
        rows += len(batch)
    workbook.save(handle)
    return rows, sheets


# ---------------------------------------------------------------- the actor network


def pseudonym(author: str, key: bytes) -> str:
    """A stable pseudonym for an author: keyed (HMAC-SHA256), so it cannot be reversed by
    hashing candidate names without the key."""
    return "actor-" + hmac.new(key, author.encode("utf-8"), hashlib.sha256).hexdigest()[:16]


def pseudonym_key(environ: dict[str, str] | None = None) -> bytes:
    """The pseudonymization key from ``OBSERVATORY_PSEUDONYM_KEY``; an error if it is unset or short."""
    value = (os.environ if environ is None else environ).get(PSEUDONYM_KEY_VARIABLE, "")
    if len(value) < 16:
        raise ExportFilterError(
            f"pseudonymized networks need {PSEUDONYM_KEY_VARIABLE} set to a secret of at least 16 characters"
        )
    return value.encode("utf-8")


_NETWORK_BASE = """
WITH sel AS (
    SELECT r.id, r.author, r.collection_run_id, r.search_terms_matched AS terms, r.published_at,
           s.name AS source, r.language
    {from_}
     WHERE {where} AND nullif(btrim(r.author), '') IS NOT NULL
)
"""

_NETWORK_NODES = """
SELECT author, count(*) AS posts,
       array_agg(DISTINCT source ORDER BY source) AS sources,
       coalesce(array_agg(DISTINCT language ORDER BY language) FILTER (WHERE language IS NOT NULL), '{}') AS languages,
       min(published_at) AS first_at, max(published_at) AS last_at
  FROM sel GROUP BY author ORDER BY author
"""

_HAS_EVENTS = "SELECT EXISTS (SELECT 1 FROM sel JOIN event_items ei ON ei.item_id = sel.id)"

# (context, author, term) rows: an event and the terms its items matched, or a (run, term) pair.
_EVENT_CONTEXTS = """
    SELECT DISTINCT 'event ' || ei.event_id AS ctx, sel.author, term, sel.published_at
      FROM sel JOIN event_items ei ON ei.item_id = sel.id
      LEFT JOIN LATERAL unnest(sel.terms) AS term ON true
"""
_TERM_CONTEXTS = """
    SELECT DISTINCT 'run ' || sel.collection_run_id || ' term ' || term AS ctx, sel.author, term, sel.published_at
      FROM sel CROSS JOIN LATERAL unnest(sel.terms) AS term
"""

_NETWORK_EDGES = """
, ctx_terms AS ({contexts}),
ctx_authors AS (
    SELECT ctx, author, min(published_at) AS first_at, max(published_at) AS last_at FROM ctx_terms GROUP BY ctx, author
),
crowded AS (SELECT ctx FROM ctx_authors GROUP BY ctx HAVING count(*) > %(max_authors)s),
pairs AS (
    SELECT a.author AS source, b.author AS target, count(*) AS weight,
           min(greatest(a.first_at, b.first_at)) AS first_at, max(greatest(a.last_at, b.last_at)) AS last_at
      FROM ctx_authors a JOIN ctx_authors b ON b.ctx = a.ctx AND a.author < b.author
     WHERE a.ctx NOT IN (SELECT ctx FROM crowded)
     GROUP BY 1, 2
),
pair_terms AS (
    SELECT a.author AS source, b.author AS target, array_agg(DISTINCT a.term ORDER BY a.term) AS shared_terms
      FROM ctx_terms a JOIN ctx_terms b ON b.ctx = a.ctx AND b.term = a.term AND a.author < b.author
     WHERE a.ctx NOT IN (SELECT ctx FROM crowded)
     GROUP BY 1, 2
)
SELECT e.source, e.target, e.weight, e.shared_terms, e.first_at, e.last_at, c.crowded_contexts
  FROM (SELECT count(*) AS crowded_contexts FROM crowded) c
  LEFT JOIN (SELECT p.source, p.target, p.weight, coalesce(t.shared_terms, '{{}}') AS shared_terms, p.first_at, p.last_at
               FROM pairs p LEFT JOIN pair_terms t USING (source, target)) e ON true
 ORDER BY e.source, e.target
"""


@dataclass
class NetworkStats:
    """How the network was built."""

    edge_basis: str  # 'events' or 'search_term_and_run'
    posts: int = 0
    crowded_contexts: int = 0


def build_network(
    cursor, filters: ExportFilters, secret: bytes | None = None, max_authors_per_context: int = MAX_AUTHORS_PER_CONTEXT
) -> tuple[nx.Graph, NetworkStats]:
    """The actor co-occurrence network of the selection.

    Nodes are authors (``posts``, ``sources``, ``languages``, first/last post);
    an edge joins two authors who posted in the same event, or, when no selected
    item belongs to an event yet, who matched the same search term in the same
    collection run. ``weight`` counts the shared events or (run, term) pairs;
    ``shared_terms`` are the search terms both authors' posts matched there.
    With a ``secret`` authors appear only as keyed pseudonyms.
    """
    where, params = selection_where(filters)
    base = _NETWORK_BASE.format(from_=SELECTION_FROM, where=where)
    name = (lambda author: pseudonym(author, secret)) if secret else (lambda author: author)
    graph = nx.Graph()
    cursor.execute(base + _NETWORK_NODES, params)
    for author, posts, sources, languages, first_at, last_at in cursor:
        graph.add_node(name(author), posts=posts, sources=sources, languages=languages, start=first_at, end=last_at)
    cursor.execute(base + _HAS_EVENTS, params)
    by_events = cursor.fetchone()[0]
    stats = NetworkStats("events" if by_events else "search_term_and_run")
    stats.posts = sum(posts for _, posts in graph.nodes(data="posts"))
    contexts = _EVENT_CONTEXTS if by_events else _TERM_CONTEXTS
    cursor.execute(base + _NETWORK_EDGES.format(contexts=contexts), {**params, "max_authors": max_authors_per_context})
    for source, target, weight, shared_terms, first_at, last_at, crowded in cursor:
        stats.crowded_contexts = crowded
        if source is not None:
            graph.add_edge(name(source), name(target), weight=weight, shared_terms=shared_terms, start=first_at, end=last_at)
    return graph, stats


def _xml_attr(value: Any) -> str:
    return quoteattr(_XML_ILLEGAL.sub("", str(value)))


def _gexf_day(value: datetime) -> str:
    return value.astimezone(UTC).date().isoformat()


def _attvalues(values: dict[str, str]) -> str:
    inner = "".join(f"<attvalue for={_xml_attr(k)} value={_xml_attr(v)}/>" for k, v in values.items())
    return f"<attvalues>{inner}</attvalues>"


def write_gexf(graph: nx.Graph, handle: BinaryIO, dynamic: bool = False, description: str = "") -> None:
    """Write ``graph`` (from :func:`build_network`) as GEXF 1.3 that validates against the official schema.

    networkx's own 1.3 writer puts a ``name`` attribute on ``<graph>`` that the
    1.3 schema does not allow, so the document is written here. ``dynamic`` adds
    each node's and edge's span in days (first to last post, UTC) for Gephi's
    timeline.
    """
    out = io.TextIOWrapper(handle, encoding="utf-8", newline="\n", write_through=False)
    mode = ' mode="dynamic" timeformat="date"' if dynamic else ' mode="static"'
    out.write('<?xml version="1.0" encoding="UTF-8"?>\n')
    out.write('<gexf xmlns="http://gexf.net/1.3" version="1.3">\n')
    out.write(f'<meta lastmodifieddate="{datetime.now(UTC).date().isoformat()}"><creator>Observatory</creator>')
    out.write(f"<description>{escape(_XML_ILLEGAL.sub('', description))}</description></meta>\n")
    out.write(f'<graph defaultedgetype="undirected" idtype="string"{mode}>\n')
    out.write('<attributes class="node" mode="static">'
              '<attribute id="posts" title="posts" type="integer"/>'
              '<attribute id="sources" title="sources" type="string"/>'
              '<attribute id="languages" title="languages" type="string"/></attributes>\n')  # fmt: skip
    out.write('<attributes class="edge" mode="static">'
              '<attribute id="shared_terms" title="shared_terms" type="string"/></attributes>\n')  # fmt: skip
    out.write(f'<nodes count="{graph.number_of_nodes()}">\n')
    for node, data in graph.nodes(data=True):
        span = f' start="{_gexf_day(data["start"])}" end="{_gexf_day(data["end"])}"' if dynamic and data.get("start") else ""
        values = {"posts": data["posts"], "sources": "; ".join(data["sources"]), "languages": "; ".join(data["languages"])}
        out.write(f"<node id={_xml_attr(node)} label={_xml_attr(node)}{span}>{_attvalues(values)}</node>\n")
    out.write(f'</nodes>\n<edges count="{graph.number_of_edges()}">\n')
    for number, (source, target, data) in enumerate(graph.edges(data=True)):
        span = f' start="{_gexf_day(data["start"])}" end="{_gexf_day(data["end"])}"' if dynamic and data.get("start") else ""
        out.write(
            f'<edge id="e{number}" source={_xml_attr(source)} target={_xml_attr(target)} weight="{data["weight"]}"{span}>'
            f"{_attvalues({'shared_terms': '; '.join(data['shared_terms'])})}</edge>\n"
        )
    out.write("</edges>\n</graph>\n</gexf>\n")
    out.flush()
    out.detach()


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


def object_key(request_id: str, fmt: str) -> str:
    """Where a request's file lives; the same request always writes the same key."""
    name = "network" if fmt == "gexf" else "items"
    return f"exports/{request_id}/{name}.{fmt}"


def _check_request(request_id: str, formats: Iterable[str], allowed: tuple[str, ...]) -> list[str]:
    if not _REQUEST_ID.match(request_id or ""):
        raise ExportFilterError(f"request id {request_id!r} must be 1-100 letters, digits, '.', '_' or '-'")
    chosen = list(dict.fromkeys(formats))
    unknown = [f for f in chosen if f not in allowed]
    if unknown or not chosen:
        raise ExportFilterError(f"formats must be among {', '.join(allowed)}; got {', '.join(unknown) or 'none'}")
    return chosen


def _safe_error(error: BaseException) -> str:
    return _CREDENTIALS_IN_URL.sub(r"\1***@", f"{type(error).__name__}: {error}")[:2000]


def _start(engine: Engine, request_id: str, fmt: str, filters: dict, key: str) -> int:
    with engine.begin() as conn:
        return conn.execute(
            text(
                """
                INSERT INTO exports (request_id, format, filters, object_key)
                VALUES (:request_id, :format, CAST(:filters AS jsonb), :key)
                ON CONFLICT (request_id, format) DO UPDATE
                   SET filters = EXCLUDED.filters, object_key = EXCLUDED.object_key, status = 'running',
                       record_count = NULL, sha256 = NULL, error = NULL, created_at = now(), finished_at = NULL
                RETURNING id
                """
            ),
            {"request_id": request_id, "format": fmt, "filters": json.dumps(filters), "key": key},
        ).scalar_one()


def _finish(engine: Engine, export_id: int, stored: StoredObject, records: int, actor: str, details: dict) -> None:
    with engine.begin() as conn:
        conn.execute(
            text(
                """
                UPDATE exports SET status = 'completed', record_count = :records, sha256 = :sha256,
                       finished_at = clock_timestamp()
                 WHERE id = :id
                """
            ),
            {"id": export_id, "records": records, "sha256": stored.sha256},
        )
        conn.execute(
            text(
                """
                INSERT INTO audit_log (actor, action, object_type, object_id, details)
                VALUES (:actor, 'export', 'exports', :id, CAST(:details AS jsonb))
                """
            ),
            {
                "actor": actor,
                "id": str(export_id),
                "details": json.dumps({"object_key": stored.key, "records": records, "sha256": stored.sha256, **details}),
            },
        )


def _fail(engine: Engine, export_id: int, error: BaseException) -> None:
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE exports SET status = 'failed', error = :error, finished_at = clock_timestamp() WHERE id = :id"),
            {"id": export_id, "error": _safe_error(error)},
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
) -> ExportResult:
    """Record the export, run ``write(key)`` → (object, records, details), mark it completed or failed."""
    key = object_key(request_id, fmt)
    export_id = _start(engine, request_id, fmt, filters.as_json(), key)
    started = time.perf_counter()
    try:
        stored, records, details = write(key)
    except BaseException as error:
        _fail(engine, export_id, error)
        raise
    seconds = time.perf_counter() - started
    _finish(engine, export_id, stored, records, actor, {"format": fmt, "filters": filters.as_json(), **details})
    return ExportResult(
        export_id, fmt, key, records, stored.size, stored.sha256, store.download_url(key, DOWNLOAD_URL_EXPIRY),
        seconds, details,
    )  # fmt: skip


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
    with _Snapshot(engine) as conn:
        validate_filters(conn, filters)
        raw = conn.connection.driver_connection
        return [
            _deliver(engine, store, request_id, fmt, filters, actor,
                     lambda key, fmt=fmt: _write_content(raw, store, key, fmt, filters, include_metadata, max_rows_per_sheet))
            for fmt in chosen
        ]  # fmt: skip


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
    with staged_upload(store, key, _CONTENT_TYPES[fmt]) as handle:
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
            with staged_upload(store, key, _CONTENT_TYPES["gexf"]) as handle:
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

        result = _deliver(engine, store, request_id, "gexf", filters, actor, write)
    return result, graph


def preview(engine: Engine, filters: ExportFilters, limit: int = 5) -> list[dict[str, str]]:
    """The first few selected items (id, source, published, title) for materialization metadata."""
    where, params = selection_where(filters)
    query = (
        f"SELECT r.id, s.name AS source, {_iso_utc('r.published_at')} AS published_at, left(r.title, 80) AS title"
        f"{SELECTION_FROM} WHERE {where} {SELECTION_ORDER} LIMIT {int(limit)}"
    )
    with engine.connect() as conn, conn.connection.driver_connection.cursor() as cursor:
        cursor.execute(query, params)
        names = [d.name for d in cursor.description]
        return [{n: "" if v is None else str(v) for n, v in zip(names, row)} for row in cursor.fetchall()]


# ---------------------------------------------------------------- Dagster


class ExportFiltersConfig(dg.Config):
    """Which items to export; every field narrows the selection, empty means everything."""

    published_from: str | None = Field(default=None, description="ISO date or date-time, inclusive (UTC if no offset).")
    published_to: str | None = Field(default=None, description="ISO date or date-time, exclusive (UTC if no offset).")
    sources: list[str] = Field(default=[], description="Source names.")
    arenas: list[str] = Field(default=[], description="Arenas (a source's config 'arena', else its type).")
    languages: list[str] = Field(default=[], description="Language codes, e.g. 'da', 'en'.")
    query_designs: list[str] = Field(default=[], description="Query design names.")
    collection_runs: list[int] = Field(default=[], description="Collection run ids.")
    search_terms: list[str] = Field(default=[], description="Items that matched any of these search terms.")
    text_query: str | None = Field(default=None, description="Full-text query in web-search syntax.")

    def filters(self) -> ExportFilters:
        return build_filters(
            self.published_from, self.published_to, self.sources, self.arenas, self.languages,
            self.query_designs, self.collection_runs, self.search_terms, self.text_query,
        )  # fmt: skip


class ContentExportsConfig(ExportFiltersConfig):
    formats: list[str] = Field(default=list(CONTENT_FORMATS), description="Any of csv, xlsx, ndjson, parquet.")
    include_metadata: bool = Field(default=False, description="Add the item's metadata as a JSON column.")


class NetworkExportsConfig(ExportFiltersConfig):
    pseudonymize: bool = Field(default=False, description=f"Authors as keyed pseudonyms ({PSEUDONYM_KEY_VARIABLE}).")
    dynamic: bool = Field(default=False, description="Add time spans to nodes and edges (Gephi timeline).")
    max_authors_per_context: int = Field(
        default=MAX_AUTHORS_PER_CONTEXT, description="Events or (run, term) pairs with more authors link nobody."
    )


def _stored_check(store: ObjectStore, results: list[ExportResult], check_name: str) -> dg.AssetCheckResult:
    sizes = {r.format: store.size(r.object_key) for r in results}
    wrong = {r.format: {"stored": sizes[r.format], "written": r.size} for r in results if sizes[r.format] != r.size}
    return dg.AssetCheckResult(
        check_name=check_name,
        passed=not wrong,
        metadata={"objects": len(results), "missing_or_wrong_size": dg.MetadataValue.json(wrong)},
    )


@dg.asset(
    group_name=EXPORTS,
    deps=["raw_items"],
    kinds={"postgres", "csv", "parquet"},
    check_specs=[
        dg.AssetCheckSpec("export_objects_stored", asset="content_exports",
                          description="Every file is in object storage with the size that was written."),
        dg.AssetCheckSpec("formats_agree", asset="content_exports",
                          description="All formats of the export hold the same number of items (one snapshot)."),
    ],  # fmt: skip
)
def content_exports(
    context: dg.AssetExecutionContext, config: ContentExportsConfig, postgres: PostgresResource,
    object_store: ObjectStoreResource,
) -> dg.MaterializeResult:  # fmt: skip
    """The filtered items as CSV (UTF-8 BOM), XLSX, NDJSON and Parquet files in object storage, with a
    download URL (S3, valid 1 hour) or path; takedown-removed items are never included. Configure
    filters and formats in the launchpad; each run writes `exports/<run id>/items.<ext>`."""
    filters = config.filters()
    engine, store = postgres.get_engine(), object_store.get_store()
    results = export_content(
        engine, store, filters, config.formats, request_id=context.run_id,
        include_metadata=config.include_metadata, actor=f"dagster:{context.run_id}",
    )  # fmt: skip
    counts = {r.format: r.record_count for r in results}
    metadata: dict[str, Any] = {
        "dagster/row_count": dg.MetadataValue.int(results[0].record_count),
        "filters": dg.MetadataValue.json(filters.as_json()),
        "record_counts": dg.MetadataValue.json(counts),
        "preview": dg.MetadataValue.md(markdown_table(preview(engine, filters))),
    }
    for r in results:
        metadata[f"{r.format}_download"] = download_metadata(r.download_url)
        metadata[f"{r.format}_object_key"] = r.object_key
        metadata[f"{r.format}_sha256"] = r.sha256
        metadata[f"{r.format}_bytes"] = dg.MetadataValue.int(r.size)
        metadata[f"{r.format}_seconds"] = dg.MetadataValue.float(round(r.seconds, 3))
        metadata[f"{r.format}_export_id"] = dg.MetadataValue.int(r.export_id)
    return dg.MaterializeResult(
        metadata=metadata,
        check_results=[
            _stored_check(store, results, "export_objects_stored"),
            dg.AssetCheckResult(
                check_name="formats_agree", passed=len(set(counts.values())) == 1, metadata={"record_counts": counts}
            ),
        ],
    )


@dg.asset(
    group_name=EXPORTS,
    deps=["raw_items", "events"],
    kinds={"postgres", "networkx"},
    check_specs=[
        dg.AssetCheckSpec("export_objects_stored", asset="network_exports",
                          description="The GEXF file is in object storage with the size that was written."),
        dg.AssetCheckSpec("network_consistent", asset="network_exports",
                          description="No self-loops, every weight at least 1, node posts add up to the posts used, "
                                      "and no author name is visible when pseudonymized."),
    ],  # fmt: skip
)
def network_exports(
    context: dg.AssetExecutionContext, config: NetworkExportsConfig, postgres: PostgresResource,
    object_store: ObjectStoreResource,
) -> dg.MaterializeResult:  # fmt: skip
    """A GEXF 1.3 actor co-occurrence network (authors joined by shared events, or by the same search
    term in the same collection run before events exist) for Gephi, in object storage with a
    download URL or path. Optional keyed pseudonyms and time spans."""
    filters = config.filters()
    engine, store = postgres.get_engine(), object_store.get_store()
    result, graph = export_network(
        engine, store, filters, request_id=context.run_id, pseudonymize=config.pseudonymize,
        dynamic=config.dynamic, max_authors_per_context=config.max_authors_per_context,
        actor=f"dagster:{context.run_id}",
    )  # fmt: skip
    consistent = (
        nx.number_of_selfloops(graph) == 0
        and all(w >= 1 for _, _, w in graph.edges(data="weight"))
        and sum(p for _, p in graph.nodes(data="posts")) == result.details["posts"]
        and (not config.pseudonymize or all(str(n).startswith("actor-") for n in graph.nodes))
    )
    top = sorted(graph.degree(weight="weight"), key=lambda pair: (-pair[1], str(pair[0])))[:10]
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": dg.MetadataValue.int(result.details["nodes"]),
            "filters": dg.MetadataValue.json(filters.as_json()),
            "gexf_download": download_metadata(result.download_url),
            "object_key": result.object_key,
            "sha256": result.sha256,
            "bytes": dg.MetadataValue.int(result.size),
            "export_id": dg.MetadataValue.int(result.export_id),
            "network": dg.MetadataValue.json(result.details),
            "top_actors_by_weighted_degree": dg.MetadataValue.md(
                markdown_table([{"actor": str(n), "weighted_degree": str(d)} for n, d in top])
            ),
            "seconds": dg.MetadataValue.float(round(result.seconds, 3)),
        },
        check_results=[
            _stored_check(store, [result], "export_objects_stored"),
            dg.AssetCheckResult(check_name="network_consistent", passed=consistent, metadata=result.details),
        ],
    )


# ---------------------------------------------------------------- CLI


def _add_filter_arguments(parser) -> None:
    parser.add_argument("--from", dest="published_from", help="published at or after (ISO date/date-time, UTC)")
    parser.add_argument("--to", dest="published_to", help="published before (ISO date/date-time, UTC)")
    parser.add_argument("--source", dest="sources", action="append", default=[], help="source name (repeatable)")
    parser.add_argument("--arena", dest="arenas", action="append", default=[], help="arena (repeatable)")
    parser.add_argument("--language", dest="languages", action="append", default=[], help="language code (repeatable)")
    parser.add_argument("--query-design", dest="query_designs", action="append", default=[], help="query design name")
    parser.add_argument("--run", dest="collection_runs", action="append", type=int, default=[], help="collection run id")
    parser.add_argument("--term", dest="search_terms", action="append", default=[], help="matched search term")
    parser.add_argument("--query", dest="text_query", help="full-text query (web-search syntax)")
    parser.add_argument("--request-id", help="reuse to replace an earlier export's files (default: a new id)")


def _filters_from(args) -> ExportFilters:
    return build_filters(
        args.published_from, args.published_to, args.sources, args.arenas, args.languages,
        args.query_designs, args.collection_runs, args.search_terms, args.text_query,
    )  # fmt: skip


def _print_results(results: list[ExportResult]) -> None:
    for r in results:
        print(json.dumps({
            "export_id": r.export_id, "format": r.format, "records": r.record_count, "bytes": r.size,
            "sha256": r.sha256, "object_key": r.object_key, "download": r.download_url, **r.details,
        }, ensure_ascii=False))  # fmt: skip


def cmd_export_items(args) -> int:
    from observatory_assets.cli import engine_and_store

    filters = _filters_from(args)
    engine, store = engine_and_store()
    results = export_content(
        engine, store, filters, args.formats or CONTENT_FORMATS, request_id=args.request_id,
        include_metadata=args.metadata, actor="cli",
    )  # fmt: skip
    _print_results(results)
    return 0


def cmd_export_network(args) -> int:
    from observatory_assets.cli import engine_and_store

    filters = _filters_from(args)
    engine, store = engine_and_store()
    result, _ = export_network(
        engine, store, filters, request_id=args.request_id, pseudonymize=args.pseudonymize,
        dynamic=args.dynamic, max_authors_per_context=args.max_authors_per_context, actor="cli",
    )  # fmt: skip
    _print_results([result])
    return 0


def cmd_export_list(args) -> int:
    from observatory_assets.cli import engine_and_store

    engine, _ = engine_and_store()
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT id, request_id, format, status, record_count, object_key, created_at "
                "FROM exports ORDER BY id DESC LIMIT :limit"
            ),
            {"limit": args.limit},
        ).all()
    for row in rows:
        print(f"{row.id:>6} {row.format:8} {row.status:10} {row.record_count if row.record_count is not None else '-':>9} "
              f"{row.created_at:%Y-%m-%d %H:%M} {row.object_key}")  # fmt: skip
    return 0


def register_commands(subparsers) -> None:
    """``observatory export items|network|list``."""
    export = subparsers.add_parser("export", help="export items (CSV, XLSX, NDJSON, Parquet) or a GEXF network")
    actions = export.add_subparsers(dest="export_command", required=True)

    items = actions.add_parser("items", help="the filtered items as files in object storage")
    items.add_argument("--format", dest="formats", action="append", choices=CONTENT_FORMATS,
                       help="repeatable; default: all four")  # fmt: skip
    items.add_argument("--metadata", action="store_true", help="add the metadata JSON column")
    _add_filter_arguments(items)
    items.set_defaults(func=cmd_export_items)

    network = actions.add_parser("network", help="the actor co-occurrence network as GEXF 1.3")
    network.add_argument("--pseudonymize", action="store_true", help=f"keyed pseudonyms ({PSEUDONYM_KEY_VARIABLE})")
    network.add_argument("--dynamic", action="store_true", help="time spans on nodes and edges")
    network.add_argument("--max-authors-per-context", type=int, default=MAX_AUTHORS_PER_CONTEXT)
    _add_filter_arguments(network)
    network.set_defaults(func=cmd_export_network)

    listing = actions.add_parser("list", help="recent exports")
    listing.add_argument("--limit", type=int, default=20)
    listing.set_defaults(func=cmd_export_list)


export_job = dg.define_asset_job(
    "export_content_and_network",
    selection=[content_exports, network_exports],
    description="Export the items (CSV, XLSX, NDJSON, Parquet) and the actor network (GEXF); filters in run config.",
)

defs = dg.Definitions(assets=[content_exports, network_exports], jobs=[export_job])
