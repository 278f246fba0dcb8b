"""Reading collector payloads into records, and normalizing records into items.

A *payload* is what a collector delivered, stored unchanged in object storage:
an RSS or Atom feed, a JSONL/NDJSON file or a CSV file. :func:`iter_records`
turns one payload into *records*, one per item the collector delivered, in a
stable order; a record that cannot even be read (a line of invalid JSON, a
broken CSV row, a feed that does not parse) comes out as a :class:`Rejection`
in its place, so the count of records is the count of delivered rows.

:func:`normalize_record` turns a readable record into an :class:`Item` (UTC
timestamps, normalized URL, NUL bytes removed, size limits enforced) or a
:class:`Rejection` with a machine-readable reason.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from html.parser import HTMLParser
from typing import Any, BinaryIO

import orjson

from observatory_assets.defs.ingestion.urls import normalize_url
from observatory_assets.lib.text import collapse_whitespace

FORMATS = ("rss", "atom", "jsonl", "csv")
#: Longest title and text an item may have; longer fields are rejected, not cut.
MAX_TITLE_CHARS = 2_000
MAX_TEXT_CHARS = 1_000_000
#: How much of a rejected record is kept inline; the full record stays in the payload object.
REJECT_EXCERPT_CHARS = 65_536
EARLIEST_PLAUSIBLE = datetime(1990, 1, 1, tzinfo=UTC)
FUTURE_TOLERANCE = timedelta(days=1)

_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_SURROGATES = re.compile(r"[\ud800-\udfff]")
#: Epoch seconds or milliseconds written as text.
_EPOCH_TEXT = re.compile(r"\d{9,13}(\.\d+)?")
#: orjson reads integers beyond 64 bits as floats; lines with such a float and a long digit run take the stdlib path.
_LONG_DIGIT_RUN = re.compile(rb"\d{20}")

FIELD_ALIASES: dict[str, tuple[str, ...]] = {
    "external_id": ("external_id", "id", "guid", "item_id", "post_id"),
    "title": ("title", "headline"),
    "text": ("text", "body", "content", "summary", "description"),
    "url": ("url", "link", "permalink"),
    "author": ("author", "byline", "username", "user"),
    "published_at": ("published_at", "published", "date", "created_at", "timestamp", "pubDate", "pubdate"),
    "language": ("language", "lang"),
}
#: Fields naming the outlet that published a row (an aggregator export mixes many); see :func:`pick_outlet`.
OUTLET_FIELDS = ("source", "publisher", "outlet", "site")
MAX_OUTLET_CHARS = 200


@dataclass(frozen=True)
class Rejection:
    """A delivered row that cannot be loaded, with a machine-readable ``reason``."""

    reason: str
    detail: str
    payload: str


@dataclass(frozen=True)
class Record:
    """One delivered row as read from its payload: field name → value."""

    fields: dict[str, Any]
    raw: str


@dataclass
class Item:
    """A normalized item, ready for loading."""

    external_id: str
    url: str | None
    title: str | None
    text: str | None
    author: str | None
    published_at: datetime | None
    language: str | None
    content_hash: bytes
    raw_metadata: dict[str, Any] = field(default_factory=dict)
    #: The outlet named by the row itself (None: the run's source published it).
    outlet: str | None = None


# ---------------------------------------------------------------- reading payloads


def iter_records(stream: BinaryIO, fmt: str) -> Iterator[Record | Rejection]:
    """Every delivered row of a payload, in order: a :class:`Record` or a :class:`Rejection`."""
    if fmt in ("rss", "atom"):
        yield from _feed_records(stream.read())
    elif fmt == "jsonl":
        yield from _jsonl_records(stream)
    elif fmt == "csv":
        yield from _csv_records(stream)
    else:
        raise ValueError(f"unknown payload format {fmt!r}; expected one of {', '.join(FORMATS)}")


def count_records(stream: BinaryIO, fmt: str) -> int:
    """How many rows a payload delivers (what :func:`iter_records` yields)."""
    if fmt == "jsonl":
        return sum(1 for _ in _jsonl_lines(stream))
    return sum(1 for _ in iter_records(stream, fmt))


def _excerpt(text: str) -> str:
    """What a rejection keeps inline: bounded, and with NUL bytes spelled out (Postgres text cannot hold them)."""
    if len(text) > REJECT_EXCERPT_CHARS:
        text = text[:REJECT_EXCERPT_CHARS] + "…[truncated]"
    return text.replace("\x00", "\\x00")


def _jsonl_lines(stream: BinaryIO) -> Iterator[bytes]:
    for line in stream:
        if line and not line.isspace():  # isspace stops at the first byte that is not (ASCII) whitespace
            yield line


def _jsonl_records(stream: BinaryIO) -> Iterator[Record | Rejection]:
    for line in _jsonl_lines(stream):
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as error:
            raw = line.decode("utf-8", "backslashreplace")
            yield Rejection("invalid_utf8", f"byte {error.start}: {error.reason}", _excerpt(raw))
            continue
        try:
            value = _decode_json(line, text)
        except json.JSONDecodeError as error:
            yield Rejection("invalid_json", f"{error.msg} at column {error.colno}", _excerpt(text))
            continue
        if not isinstance(value, dict):
            yield Rejection("not_an_object", f"a JSON {type(value).__name__}, not an object", _excerpt(text))
            continue
        yield Record(_flatten_4cat(value), text)


def _decode_json(line: bytes, text: str) -> Any:
    """orjson where it reads exactly what the standard library reads; the standard library for
    the rest (lone surrogates, NaN, integers beyond 64 bits, a BOM), whose verdict and messages count."""
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError:
        return json.loads(text)
    if _holds_float(value) and _LONG_DIGIT_RUN.search(line):
        return json.loads(text)
    return value


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
            yield Rejection("invalid_utf8", "row holds bytes that are not UTF-8", _excerpt(shown))
        elif len(row) != width:
            yield Rejection("csv_field_count", f"{len(row)} fields, header has {width}", _excerpt(raw))
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
            excerpt = _excerpt(document.decode("utf-8", "backslashreplace"))
            yield Rejection("malformed_feed", _excerpt(problem) or "not an RSS or Atom document", excerpt)
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


# ---------------------------------------------------------------- normalizing records


def parse_timestamp(value: Any) -> datetime | None:
    """A UTC datetime from ISO 8601, RFC 2822, epoch seconds/milliseconds or a datetime.

    Returns None for an empty value; raises ValueError for anything unreadable.
    Naive timestamps are taken as UTC.
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, bool):
        raise ValueError(f"not a timestamp: {value!r}")
    elif isinstance(value, int | float) or (isinstance(value, str) and _EPOCH_TEXT.fullmatch(value.strip())):
        seconds = float(value)
        if seconds > 1e11:  # milliseconds
            seconds /= 1000
        parsed = datetime.fromtimestamp(seconds, tz=UTC)
    elif isinstance(value, str):
        parsed = _parse_timestamp_text(value.strip())
    else:
        raise ValueError(f"not a timestamp: {type(value).__name__}")
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _parse_timestamp_text(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    except ValueError:
        pass
    try:
        return parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        pass
    from dateutil import parser as dateutil_parser

    try:
        return dateutil_parser.parse(text)
    except (ValueError, OverflowError) as error:
        raise ValueError(f"unparseable timestamp {text[:80]!r}") from error


def content_hash(title: str | None, text: str | None) -> bytes:
    """SHA-256 of the case-folded, whitespace-collapsed title and text: equal content, equal hash."""
    digest = hashlib.sha256(_folded(collapse_whitespace(title or "")).encode("utf-8"))
    digest.update(b"\x1f")
    digest.update(_folded(collapse_whitespace(text or "")).encode("utf-8"))
    return digest.digest()


def _folded(text: str) -> str:
    """Case-folded; for ASCII text that is lower-casing, which CPython does without Unicode tables."""
    return text.lower() if text.isascii() else text.casefold()


def _clean_text(value: Any, notes: set[str]) -> str | None:
    """Text without NUL and other control characters, newlines unified, NFC-normalized.

    This runs several times per delivered row, so the common case (nothing to fix)
    is decided by C-level string predicates before any regular expression runs.
    """
    if value is None:
        return None
    if isinstance(value, list | dict):
        raise TypeError(type(value).__name__)
    text = value if isinstance(value, str) else str(value)
    printable = text.isprintable()
    if not printable:
        if "\x00" in text:
            notes.add("nul_bytes_removed")
        if "\r" in text:
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        text = _CONTROL_CHARS.sub("", text)
    if not text.isascii():
        if not printable and _SURROGATES.search(text):  # a surrogate (category Cs) is not printable
            notes.add("lone_surrogates_replaced")
            text = _SURROGATES.sub("\ufffd", text)
        if not unicodedata.is_normalized("NFC", text):
            text = unicodedata.normalize("NFC", text)
    return text.strip() or None


def _clean_metadata(value: Any, notes: set[str]) -> Any:
    if isinstance(value, str):
        return _clean_text(value, notes) or ""
    if isinstance(value, dict):
        return {_clean_text(str(k), notes) or "_": _clean_metadata(v, notes) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean_metadata(v, notes) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, float) and value != value:  # NaN is not JSON
        return None
    return value


def _pick(fields: dict[str, Any], name: str, used: set[str]) -> Any:
    for alias in FIELD_ALIASES[name]:
        value = fields.get(alias)
        if value is not None and value != "":
            used.add(alias)
            return value
    for alias in FIELD_ALIASES[name]:
        if alias in fields:
            used.add(alias)
    return None


def pick_outlet(fields: dict[str, Any], used: set[str], notes: set[str]) -> str | None:
    """The outlet a row names in its first non-empty OUTLET_FIELDS field: a name, or an object with
    a ``name`` (as in NewsAPI exports). A value that is no usable name leaves the row to the run's source."""
    for name in OUTLET_FIELDS:
        value = fields.get(name)
        if isinstance(value, dict):
            value = value.get("name")
        if not isinstance(value, str):
            continue
        outlet = _clean_text(value, notes)
        if outlet is None:
            continue
        outlet = collapse_whitespace(outlet)
        if len(outlet) > MAX_OUTLET_CHARS:
            notes.add("outlet_name_too_long")
            return None
        used.add(name)
        return outlet
    return None


def normalize_record(record: Record, now: datetime | None = None) -> Item | Rejection:
    """An :class:`Item`, or a :class:`Rejection` saying why the record cannot be loaded."""
    now = now or datetime.now(UTC)
    fields = record.fields
    used: set[str] = set()
    notes: set[str] = set()
    picked = {name: _pick(fields, name, used) for name in FIELD_ALIASES}

    def reject(reason: str, detail: str) -> Rejection:
        return Rejection(reason, detail, _excerpt(record.raw))

    try:
        title = _clean_text(picked["title"], notes)
        text = _clean_text(picked["text"], notes)
        author = _clean_text(picked["author"], notes)
        external_id = _clean_text(picked["external_id"], notes)
        language = _clean_text(picked["language"], notes)
    except TypeError as error:
        return reject("invalid_field_type", f"a field holds a JSON {error}, not text")
    if title is None and text is None:
        return reject("empty_content", "no title and no text")
    if title is not None and len(title) > MAX_TITLE_CHARS:
        return reject("field_too_large", f"title has {len(title)} characters (limit {MAX_TITLE_CHARS})")
    if text is not None and len(text) > MAX_TEXT_CHARS:
        return reject("field_too_large", f"text has {len(text)} characters (limit {MAX_TEXT_CHARS})")
    if title is not None:
        title = collapse_whitespace(title)
    try:
        published_at = parse_timestamp(picked["published_at"])
    except (ValueError, OverflowError, OSError) as error:
        return reject("unparseable_date", str(error))
    if published_at is None:
        notes.add("published_at_missing")
    elif published_at > now + FUTURE_TOLERANCE:
        return reject("future_date", f"published_at {published_at.isoformat()} is in the future")
    elif published_at < EARLIEST_PLAUSIBLE:
        return reject(
            "implausible_date", f"published_at {published_at.isoformat()} is before {EARLIEST_PLAUSIBLE.year}"
        )
    url = normalize_url(picked["url"])
    if picked["url"] and url is None:
        notes.add("url_not_http")
    digest = content_hash(title, text)
    outlet = pick_outlet(fields, used, notes)
    metadata = _clean_metadata({k: v for k, v in fields.items() if k not in used}, notes)
    if picked["url"] and url != picked["url"]:
        metadata["original_url"] = _clean_text(picked["url"], notes)
    if notes:
        metadata["_normalized"] = sorted(notes)
    return Item(
        external_id=external_id or url or digest.hex(),
        url=url,
        title=title,
        text=text,
        author=author,
        published_at=published_at,
        language=language.lower()[:16] if language else None,
        content_hash=digest,
        raw_metadata=metadata,
        outlet=outlet,
    )
