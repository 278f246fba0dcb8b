"""Reading collector payloads into records, one per delivered row.

A *payload* is what a collector delivered, stored unchanged in object storage:
an RSS or Atom feed, a JSONL/NDJSON file (an arena collector's pages are stored
as one) or a CSV file. :func:`iter_records` turns one payload into *records*,
one per item the collector delivered, in a stable order; a record that cannot
even be read (a line of invalid JSON, a broken CSV row, a feed that does not
parse) comes out as a :class:`Rejection` in its place, so the count of records
is the count of delivered rows. Turning a record into an item is
:mod:`.normalizing`'s.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from html.parser import HTMLParser
from typing import Any, BinaryIO

import orjson

FORMATS = ("rss", "atom", "jsonl", "csv")
#: The arena collectors' formats (``defs/collection/arenas``): a cycle's pages stored as JSONL rows.
ARENA_FORMATS = ("reddit", "bluesky", "gdelt", "telegram", "youtube")
#: Longest text an item may have; longer fields are rejected, not cut.
MAX_TEXT_CHARS = 1_000_000
#: How much of a rejected record is kept inline; the full record stays in the payload object.
REJECT_EXCERPT_CHARS = 65_536

_SURROGATES = re.compile(r"[\ud800-\udfff]")
#: orjson reads integers beyond 64 bits as floats; lines with such a float and a long digit run take the stdlib path.
_LONG_DIGIT_RUN = re.compile(rb"\d{20}")


@dataclass(frozen=True)
class Rejection:
    """A delivered row that cannot be loaded, with a machine-readable ``reason``."""

    reason: str
    detail: str
    payload: str


@dataclass(frozen=True)
class Record:
    """One delivered row as read from its payload: field name → value, and the row as delivered: its
    text, or a JSONL line's bytes (UTF-8, as its parser verified), decoded only when the text is needed."""

    fields: dict[str, Any]
    raw: str | bytes

    @property
    def text(self) -> str:
        """The row as delivered, as text (what a rejection keeps)."""
        return _text(self.raw)


def _text(delivered: str | bytes) -> str:
    return delivered if isinstance(delivered, str) else delivered.decode("utf-8")


def iter_records(stream: BinaryIO, fmt: str) -> Iterator[Record | Rejection]:
    """Every delivered row of a payload, in order: a :class:`Record` or a :class:`Rejection`."""
    if fmt in ("rss", "atom"):
        yield from _feed_records(stream.read())
    elif fmt == "jsonl" or fmt in ARENA_FORMATS:
        yield from _jsonl_records(stream)
    elif fmt == "csv":
        yield from _csv_records(stream)
    else:
        raise ValueError(f"unknown payload format {fmt!r}; expected one of {', '.join((*FORMATS, *ARENA_FORMATS))}")


def count_records(stream: BinaryIO, fmt: str) -> int:
    """How many rows a payload delivers (what :func:`iter_records` yields)."""
    if fmt == "jsonl" or fmt in ARENA_FORMATS:
        return sum(1 for _ in _jsonl_lines(stream))
    return sum(1 for _ in iter_records(stream, fmt))


def excerpt(text: str) -> str:
    """What a rejection keeps inline: bounded, and with NUL bytes spelled out (Postgres text cannot hold them)."""
    if len(text) > REJECT_EXCERPT_CHARS:
        text = text[:REJECT_EXCERPT_CHARS] + "…[truncated]"
    return text.replace("\x00", "\\x00")


def _jsonl_lines(stream: BinaryIO) -> Iterator[bytes]:
    for line in stream:
        if line and not line.isspace():  # isspace stops at the first byte that is not (ASCII) whitespace
            yield line


def _jsonl_records(stream: BinaryIO) -> Iterator[Record | Rejection]:
    """Each line read by orjson where it reads exactly what the standard library reads (orjson also
    verifies the line is UTF-8, so it is decoded only if needed); :func:`_jsonl_line` for the rest."""
    for line in _jsonl_lines(stream):
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError:
            yield _jsonl_line(line)
            continue
        if _holds_float(value) and _LONG_DIGIT_RUN.search(line):
            yield _jsonl_line(line)
        else:
            yield _object_record(value, line)


def _jsonl_line(line: bytes) -> Record | Rejection:
    """A line read by the standard library (lone surrogates, NaN, integers beyond 64 bits, a BOM,
    text that is not JSON or not UTF-8), whose verdict and messages count."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as error:
        raw = line.decode("utf-8", "backslashreplace")
        return Rejection("invalid_utf8", f"byte {error.start}: {error.reason}", excerpt(raw))
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        return Rejection("invalid_json", f"{error.msg} at column {error.colno}", excerpt(text))
    return _object_record(value, text)


def _object_record(value: Any, delivered: str | bytes) -> Record | Rejection:
    if isinstance(value, dict):
        return Record(_flatten_4cat(value), delivered)
    return Rejection("not_an_object", f"a JSON {type(value).__name__}, not an object", excerpt(_text(delivered)))


def _holds_float(value: Any) -> bool:
    """Whether a decoded JSON value holds a float anywhere (orjson's reading of a huge integer is one)."""
    if type(value) is float:
        return True
    pending = [value] if type(value) in (dict, list) else []
    while pending:
        current = pending.pop()
        for child in current.values() if isinstance(current, dict) else current:
            kind = type(child)
            if kind is float:
                return True
            if kind is dict or kind is list:
                pending.append(child)
    return False


def _flatten_4cat(value: dict[str, Any]) -> dict[str, Any]:
    """4CAT/Zeeschuimer NDJSON wraps each post as ``{"item": {...}, "source_platform": ...}``."""
    item = value.get("item")
    if not isinstance(item, dict) or "source_platform" not in value:
        return value
    flat = {k: v for k, v in item.items()}
    flat.setdefault("text", item.get("desc") or item.get("caption") or item.get("body"))
    flat.setdefault("published_at", item.get("createTime") or item.get("taken_at") or value.get("timestamp_collected"))
    author = item.get("author")
    if isinstance(author, dict):
        flat["author"] = author.get("uniqueId") or author.get("username") or author.get("nickname")
    flat["platform"] = value.get("source_platform")
    return flat


def _csv_records(stream: BinaryIO) -> Iterator[Record | Rejection]:
    """Rows of a CSV payload. A row the csv module cannot read (a field beyond the item size limit)
    becomes a rejection in its place, and reading resumes on the next line."""
    csv.field_size_limit(MAX_TEXT_CHARS)  # the module's default (131,072) is far below what an item may hold
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", errors="surrogateescape", newline="")
    try:
        yield from _csv_rows(csv.reader(text))
    finally:
        text.detach()  # the stream is the caller's: handed back open (a collected wrapper would close it)


def _csv_rows(reader) -> Iterator[Record | Rejection]:
    """The rows of :func:`_csv_records`, read by ``reader`` (a ``csv.reader``)."""
    try:
        header = next(reader)
    except StopIteration:
        return
    except csv.Error as error:
        yield Rejection("csv_unreadable", f"header: {error}", "")
        return
    width = len(header)
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            yield _unreadable_csv_row(error, reader.line_num)
            continue
        raw = ",".join(row)
        if not any(cell.strip() for cell in row):
            continue
        if _SURROGATES.search(raw):
            shown = raw.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
            yield Rejection("invalid_utf8", "row holds bytes that are not UTF-8", excerpt(shown))
        elif len(row) != width:
            yield Rejection("csv_field_count", f"{len(row)} fields, header has {width}", excerpt(raw))
        else:
            yield Record(dict(zip(header, row)), raw)


def _unreadable_csv_row(error: csv.Error, line_num: int) -> Rejection:
    """The rejection standing for a row the csv module gave up on (its text stays in the payload object)."""
    if "field larger than field limit" in str(error):
        return Rejection("field_too_large", f"line {line_num}: a field has more than {MAX_TEXT_CHARS} characters", "")
    return Rejection("csv_unreadable", f"line {line_num}: {error}", "")


def _feed_records(document: bytes) -> Iterator[Record | Rejection]:
    import feedparser

    parsed = feedparser.parse(document, sanitize_html=False, resolve_relative_uris=False)
    problem = str(parsed.get("bozo_exception", "")) if parsed.get("bozo") else ""
    if not parsed.entries:
        if problem or not parsed.get("version"):
            shown = excerpt(document.decode("utf-8", "backslashreplace"))
            yield Rejection("malformed_feed", excerpt(problem) or "not an RSS or Atom document", shown)
        return
    for entry in parsed.entries:
        fields = _feed_entry_fields(entry)
        if problem:  # feedparser recovered these entries from a feed that is not well-formed
            fields["feed_problem"] = problem
        yield Record(fields, json.dumps(entry, default=str, ensure_ascii=False))


def _feed_entry_fields(entry: Any) -> dict[str, Any]:
    content = entry.get("content") or []
    body = content[0].get("value") if content else entry.get("summary")
    published = entry.get("published_parsed") or entry.get("updated_parsed")
    fields: dict[str, Any] = {
        "external_id": entry.get("id") or entry.get("link"),
        "title": html_to_text(entry.get("title") or ""),
        "text": html_to_text(body or ""),
        "url": entry.get("link"),
        "author": entry.get("author"),
        "published_at": datetime(*published[:6], tzinfo=UTC) if published else entry.get("published"),
        "language": entry.get("language") or (entry.get("title_detail") or {}).get("language"),
    }
    tags = [t.get("term") for t in entry.get("tags") or [] if t.get("term")]
    if tags:
        fields["categories"] = tags
    outlet = (entry.get("source") or {}).get("title")
    if outlet:  # <source url="...">Outlet</source> (RSS) or <source><title>Outlet</title></source> (Atom)
        fields["source"] = outlet
    return fields


class _TextExtractor(HTMLParser):
    _BLOCKS = {"p", "br", "div", "li", "h1", "h2", "h3", "h4", "tr", "blockquote"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag in ("script", "style"):
            self._skip += 1
        elif tag in self._BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style") and self._skip:
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def html_to_text(markup: str) -> str:
    """Visible text of an HTML fragment (feeds deliver summaries as HTML)."""
    if "<" not in markup and "&" not in markup:
        return markup
    extractor = _TextExtractor()
    extractor.feed(markup)
    extractor.close()
    return re.sub(r"[ \t]*\n\s*", "\n", "".join(extractor.parts)).strip()
