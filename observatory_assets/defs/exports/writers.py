"""Streaming writers: CSV, NDJSON, Parquet and XLSX from a COPY or a server-side cursor, in constant memory."""

from __future__ import annotations

import io
import itertools
from collections.abc import Iterable, Iterator
from contextlib import closing
from typing import BinaryIO

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from observatory_assets.defs.exports.columns import XLSX_MAX_ROWS, Column, _unescape_line_breaks
from observatory_assets.lib.streaming import in_background
from resources.object_store import ObjectStore, StoredObject

CONTENT_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "ndjson": "application/x-ndjson",
    "parquet": "application/vnd.apache.parquet",
    "gexf": "application/gexf+xml",
}
_FETCH_ROWS = 2_000
_PARQUET_BLOCK_BYTES = 8 * 1024 * 1024
_TERMS_SEPARATOR = "\x1f"


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


def copy_blocks(cursor, query: str, params: dict, options: str, block_bytes: int, ahead: int) -> Iterator[bytearray]:
    """The output of ``COPY (query) TO STDOUT WITH (options)`` in blocks of about ``block_bytes``.

    A background thread drains the COPY up to ``ahead`` blocks ahead of the consumer, so
    Postgres keeps producing while the consumer writes, hashes or parses (all of which
    release the GIL); memory holds at most ``ahead + 2`` blocks. Closing the generator
    early cancels the COPY.
    """

    def blocks() -> Iterator[bytearray]:
        # Each row arrives as its own buffer; copying it into one growing block at once (rather
        # than keeping the buffers for a join) holds no per-row objects, which would wake the
        # garbage collector every few hundred rows.
        with cursor.copy(f"COPY ({query}) TO STDOUT WITH ({options})", params) as copy:
            block = bytearray()
            for chunk in copy:
                block += chunk
                if len(block) >= block_bytes:
                    yield block
                    block = bytearray()
            if block:
                yield block

    return in_background(blocks(), ahead, "copy-reader")


def write_csv(cursor, query: str, params: dict, store: ObjectStore, key: str) -> tuple[StoredObject, int]:
    """CSV (UTF-8 with BOM, RFC 4180 quoting, header) straight from ``COPY``; returns (object, rows)."""
    with closing(copy_blocks(cursor, query, params, "FORMAT csv, HEADER", 1 << 20, ahead=8)) as blocks:
        stream = io.BufferedReader(ChunkStream(itertools.chain([b"\xef\xbb\xbf"], blocks)), 1 << 20)
        stored = store.put_stream(key, stream, CONTENT_TYPES["csv"])
    return stored, cursor.rowcount


def write_ndjson(cursor, query: str, params: dict, store: ObjectStore, key: str) -> tuple[StoredObject, int]:
    """One JSON object per line, serialized by Postgres; returns (object, rows).

    COPY's CSV mode with quote and delimiter characters that JSON text never holds
    raw (it escapes control characters) passes each line through unchanged.
    """
    options = "FORMAT csv, QUOTE E'\\x01', DELIMITER E'\\x02'"
    with closing(copy_blocks(cursor, query, params, options, 1 << 20, ahead=8)) as blocks:
        stored = store.put_stream(key, io.BufferedReader(ChunkStream(blocks), 1 << 20), CONTENT_TYPES["ndjson"])
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
    cursor,
    query: str,
    params: dict,
    handle: BinaryIO,
    columns: tuple[Column, ...],
    max_rows_per_sheet: int = XLSX_MAX_ROWS,
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
