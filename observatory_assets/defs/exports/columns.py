"""The exported columns and the SQL that formats each one per file format."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from observatory_assets.defs.exports.filters import (
    ExportFilters,
    driver_sql,
    selection,
)
from observatory_assets.lib.sql import identifier

XLSX_MAX_CELL_CHARS = 32_767
XLSX_MAX_ROWS = 1_048_576  # per sheet, the header row included
TRUNCATION_MARKER = "…[truncated]"


# ---------------------------------------------------------------- columns


@dataclass(frozen=True)
class Column:
    """One exported column: its name, SQL, kind (text, count, score, time, date, terms, json), XLSX width."""

    name: str
    sql: str
    kind: str
    width: int


COLUMNS: tuple[Column, ...] = (
    Column("item_id", "r.id", "count", 10),
    Column("source", "s.name", "text", 18),
    Column("platform", "r.platform", "text", 12),
    Column("arena", "r.arena", "text", 12),
    Column("content_type", "r.content_type", "text", 12),
    Column("title", "r.title", "text", 50),
    Column("text", "r.text", "text", 80),
    Column("url", "r.url", "text", 40),
    Column("author", "r.author", "text", 20),
    Column("author_handle", "r.author_handle", "text", 20),
    Column("published_at", "r.published_at", "time", 20),
    Column("likes", "r.likes", "count", 9),
    Column("shares", "r.shares", "count", 9),
    Column("comments", "r.comments", "count", 9),
    Column("views", "r.views", "count", 9),
    Column("language", "r.language", "text", 9),
    Column("collection_run", "r.collection_run_id", "count", 10),
    Column("query_design", "qd.name", "text", 18),
    Column("search_terms_matched", "r.search_terms_matched", "terms", 30),
    Column("sentiment_label", "r.sentiment_label", "text", 10),
    Column("sentiment_score", "r.sentiment_score", "score", 10),
    Column("sentiment_method", "r.sentiment_method", "text", 16),
)
METADATA_COLUMN = Column("metadata", "r.raw_metadata::text", "json", 60)

_ARROW_TYPES = {
    "text": pa.string(),
    "json": pa.string(),
    "count": pa.int64(),
    "score": pa.float32(),
    "time": pa.timestamp("us", tz="UTC"),
    "terms": pa.list_(pa.string()),
    "date": pa.date32(),
}


def export_columns(include_metadata: bool) -> tuple[Column, ...]:
    """The columns of a content export."""
    return (*COLUMNS, METADATA_COLUMN) if include_metadata else COLUMNS


def arrow_schema(columns: Iterable[Column]) -> pa.Schema:
    """The explicit Parquet schema of ``columns``: strings, int64 counts, timestamp[us, UTC], dates,
    list<string> terms."""
    return pa.schema([pa.field(c.name, _ARROW_TYPES[c.kind]) for c in columns])


def parquet_schema(include_metadata: bool) -> pa.Schema:
    """The explicit Parquet schema of a content export."""
    return arrow_schema(export_columns(include_metadata))


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
    return (
        f"replace(replace(replace({sql}, chr(30), chr(30) || '0'), chr(10), chr(30) || '1'), chr(13), chr(30) || '2')"
    )


def _unescape_line_breaks(column: pa.ChunkedArray) -> pa.ChunkedArray:
    # Every RS in an escaped value starts a two-character token, so replacing the tokens one
    # kind after another cannot match across tokens; RS itself comes back last.
    if not pc.any(pc.match_substring(column, "\x1e")).as_py():
        return column
    for token, original in (("\x1e1", "\n"), ("\x1e2", "\r"), ("\x1e0", "\x1e")):
        column = pc.replace_substring(column, token, original)
    return column


def select_list(columns: Iterable[Column], fmt: str) -> str:
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
        if column.kind == "date" and fmt != "xlsx":
            sql = f"to_char({sql}, 'YYYY-MM-DD')"
        if column.kind == "terms":
            if fmt == "parquet":
                sql = f"nullif(array_to_string({sql}, chr(31)), '')"
            elif fmt in ("csv", "xlsx"):
                sql = f"array_to_string({sql}, '; ')"
        if column.kind in ("text", "json", "terms") and fmt == "parquet":
            sql = _line_breaks_escaped(sql)
        rendered.append(f"{sql} AS {identifier(column.name)}")
    return ",\n       ".join(rendered)


def content_query(filters: ExportFilters, fmt: str, include_metadata: bool = False) -> tuple[str, dict[str, Any]]:
    """The SELECT of a content export in ``fmt`` (oldest first), with its parameters."""
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
        select = select_list(columns, fmt)
    return driver_sql(selection(filters, select))
