"""Normalizing a delivered record into an item, or a rejection saying why it cannot be one.

:func:`normalize_record` turns a readable record (see :mod:`.records`) into an
:class:`Item` (UTC timestamps, normalized URL, NUL bytes removed, size limits
enforced) or a :class:`~.records.Rejection` with a machine-readable reason.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

from observatory_assets.defs.ingestion.records import MAX_TEXT_CHARS, Record, Rejection, excerpt
from observatory_assets.defs.ingestion.urls import normalize_url
from observatory_assets.lib.text import collapse_whitespace

#: Longest title an item may have; a longer one is rejected, not cut.
MAX_TITLE_CHARS = 2_000
EARLIEST_PLAUSIBLE = datetime(1990, 1, 1, tzinfo=UTC)
FUTURE_TOLERANCE = timedelta(days=1)

_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_SURROGATES = re.compile(r"[\ud800-\udfff]")
#: Epoch seconds or milliseconds written as text.
_EPOCH_TEXT = re.compile(r"\d{9,13}(\.\d+)?")

FIELD_ALIASES: dict[str, tuple[str, ...]] = {
    "external_id": ("external_id", "id", "guid", "item_id", "post_id"),
    "title": ("title", "headline"),
    "text": ("text", "body", "content", "summary", "description"),
    "url": ("url", "link", "permalink"),
    "author": ("author", "byline", "username", "user"),
    "published_at": ("published_at", "published", "date", "created_at", "timestamp", "pubDate", "pubdate"),
    "language": ("language", "lang"),
}
#: Where engagement counts are read from, the first holding a whole non-negative number winning (a path
#: with commas reaches into an object). The fields stay in ``raw_metadata`` too: it keeps the row as delivered.
COUNT_PATHS: dict[str, tuple[str, ...]] = {
    "views": ("views", "view_count", "viewCount", "stats,playCount"),
    "likes": ("likes", "like_count", "likeCount", "favorite_count", "stats,diggCount"),
    "shares": ("shares", "share_count", "repostCount", "retweet_count", "stats,shareCount"),
    "comments": ("comments", "comment_count", "replyCount", "num_comments", "reply_count", "stats,commentCount"),
}
HANDLE_FIELDS = ("author_handle", "handle", "screen_name")
#: The top-level fields read_presence looks at: a row holding none of them states no presence.
PRESENCE_FIELDS = frozenset(
    {path.split(",")[0] for paths in COUNT_PATHS.values() for path in paths}
    | {*HANDLE_FIELDS, "platform", "content_type"}
)
MAX_COUNT = 9 * 10**18
_DIGITS = re.compile(r"[0-9]{1,18}")
#: Fields naming the outlet that published a row (an aggregator export mixes many); see :func:`pick_outlet`.
OUTLET_FIELDS = ("source", "publisher", "outlet", "site")
MAX_OUTLET_CHARS = 200


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
    presence: Presence = field(default_factory=lambda: Presence())


@dataclass(frozen=True)
class Presence:
    """Where and how an item appeared, as the row says: its platform, content type, the author's handle
    there, and the engagement the platform reported (None: the row does not say)."""

    platform: str | None = None
    content_type: str | None = None
    author_handle: str | None = None
    views: int | None = None
    likes: int | None = None
    shares: int | None = None
    comments: int | None = None


#: A row that states nothing about where it appeared (most news rows).
NO_PRESENCE = Presence()


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
    return _collapsed_content_hash(collapse_whitespace(title or ""), collapse_whitespace(text or ""))


def _collapsed_content_hash(title: str, text: str) -> bytes:
    """:func:`content_hash` of a title and text whose whitespace is already collapsed."""
    digest = hashlib.sha256(_folded(title).encode("utf-8"))
    digest.update(b"\x1f")
    digest.update(_folded(text).encode("utf-8"))
    return digest.digest()


def _folded(text: str) -> str:
    """Case-folded; for ASCII text that is lower-casing, which CPython does without Unicode tables."""
    return text.lower() if text.isascii() else text.casefold()


def _clean_text(value: Any, notes: set[str]) -> str | None:
    """Text without NUL and other control characters, newlines unified, NFC-normalized."""
    return _clean_text_checked(value, notes)[0]


def _clean_text_checked(value: Any, notes: set[str]) -> tuple[str | None, bool]:
    """:func:`_clean_text`, and whether the text was printable as delivered (then so is the result,
    and collapsing its whitespace needs no second look at every character).

    This runs several times per delivered row, so the common case (nothing to fix)
    is decided by C-level string predicates before any regular expression runs.
    """
    if value is None:
        return None, True
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
    return text.strip() or None, printable


def _collapsed(text: str | None, printable: bool) -> str:
    """``collapse_whitespace(text or "")`` for a result of :func:`_clean_text_checked` (stripped already)."""
    if text is None:
        return ""
    if not printable:
        return collapse_whitespace(text)
    return text if "  " not in text else " ".join(text.split())


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


def _count(value: Any) -> int | None:
    """A whole non-negative count from a number or digit text; None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float) and value == value and 0 <= value <= MAX_COUNT:
        return round(value)
    if isinstance(value, str) and _DIGITS.fullmatch(value.strip()):
        return int(value.strip())
    return None


def _at_path(fields: dict[str, Any], path: str) -> Any:
    value: Any = fields
    for part in path.split(","):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _short_text(value: Any, notes: set[str]) -> str | None:
    if not isinstance(value, str):
        return None
    cleaned = _clean_text(value, notes)
    return collapse_whitespace(cleaned)[:MAX_OUTLET_CHARS] if cleaned else None


def read_presence(fields: dict[str, Any], notes: set[str]) -> Presence:
    """The platform, content type, handle and engagement counts a row states (see :data:`COUNT_PATHS`)."""
    if fields.keys().isdisjoint(PRESENCE_FIELDS):
        return NO_PRESENCE
    counts = {}
    for name, paths in COUNT_PATHS.items():
        counts[name] = next((count for path in paths if (count := _count(_at_path(fields, path))) is not None), None)
    handle = next((h for key in HANDLE_FIELDS if (h := _short_text(fields.get(key), notes))), None)
    platform = _short_text(fields.get("platform"), notes)
    content_type = _short_text(fields.get("content_type"), notes)
    return Presence(
        platform=platform.lower() if platform else None,
        content_type=content_type.lower() if content_type else None,
        author_handle=handle,
        **counts,
    )


def normalize_record(record: Record, now: datetime | None = None) -> Item | Rejection:
    """An :class:`Item`, or a :class:`Rejection` saying why the record cannot be loaded."""
    now = now or datetime.now(UTC)
    fields = record.fields
    used: set[str] = set()
    notes: set[str] = set()
    picked = {name: _pick(fields, name, used) for name in FIELD_ALIASES}

    def reject(reason: str, detail: str) -> Rejection:
        return Rejection(reason, detail, excerpt(record.text))

    try:
        title = _clean_text(picked["title"], notes)
        text, text_printable = _clean_text_checked(picked["text"], notes)
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
    digest = _collapsed_content_hash(title or "", _collapsed(text, text_printable))
    outlet = pick_outlet(fields, used, notes)
    presence = read_presence(fields, notes)
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
        presence=presence,
    )
