"""One polite conditional fetch of one source, and the schedule that follows from its answer.

The fetch sends the stored validators (``If-None-Match``, ``If-Modified-Since``),
follows at most 5 redirects through the guarded outbound client, and streams a
changed body into object storage through a local temporary file (constant
memory, capped). What the answer means for the source is decided here as plain
functions: the next check (the ``auto`` interval adapted to entries per day,
clamped to 5 min – 24 h, never below the feed's ``<ttl>`` or ``Cache-Control:
max-age``), exponential back-off with jitter after an error (1 min doubling to
24 h, never silent for good), a host's ``Retry-After`` (seconds or an HTTP date, at most 24 h: :mod:`resources.http_headers`).
"""

from __future__ import annotations

import io
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx

from observatory_assets.defs.collection.counting import count_payload
from observatory_assets.defs.ingestion.records import ARENA_FORMATS
from observatory_assets.lib.errors import failure_message
from resources.http_headers import retry_after_moment
from resources.object_store import ObjectStore, StoredObject, staged_upload
from resources.outbound import OutboundClient, OutboundError

MIN_INTERVAL = timedelta(minutes=5)
MAX_INTERVAL = timedelta(hours=24)
#: ``auto`` sources with no week of history yet are checked this often while they are learned.
LEARNING_INTERVAL = timedelta(hours=1)
FIRST_BACKOFF = timedelta(minutes=1)
MAX_REDIRECTS = 5
#: The longest ``ETag`` or ``Last-Modified`` kept.
MAX_VALIDATOR = 1024
#: A changed body up to this size is stored from memory; a larger one through a temporary file.
IN_MEMORY_BODY = 512 * 1024
#: Where a feed's ``<ttl>`` is looked for.
HEAD_BYTES = 65536
_TTL = re.compile(rb"<ttl>\s*(\d{1,6})\s*</ttl>", re.IGNORECASE)
_MAX_AGE = re.compile(r"max-age\s*=\s*(\d+)", re.IGNORECASE)
_EXTENSIONS = {"rss": "xml", "atom": "xml", "jsonl": "jsonl", "csv": "csv", **dict.fromkeys(ARENA_FORMATS, "jsonl")}


@dataclass(frozen=True)
class PolledSource:
    """A source due for a check, with what it sent last time."""

    id: int
    name: str
    url: str
    fmt: str
    etag: str | None = None
    last_modified: str | None = None
    error_count: int = 0
    #: When the check was due (``next_check_at`` before the cycle claimed it): the next one counts from it.
    scheduled: datetime | None = None

    @property
    def host(self) -> str:
        """The URL's host (the URL itself if it cannot be read: its own fetch fails, not the cycle)."""
        try:
            return httpx.URL(self.url).host
        except httpx.InvalidURL:
            return self.url


@dataclass(frozen=True)
class FetchOutcome:
    """What one check of a source found; ``key`` is set when a changed body was stored."""

    source: PolledSource
    status: int | None
    etag: str | None = None
    last_modified: str | None = None
    key: str | None = None
    size: int = 0
    sha256: str | None = None
    records: int = 0
    error: str | None = None
    moved_to: str | None = None
    retry_after: datetime | None = None
    min_interval_s: int | None = None
    requested: bool = True

    @property
    def not_modified(self) -> bool:
        return self.status == 304

    @property
    def changed(self) -> bool:
        return self.key is not None

    @property
    def gone(self) -> bool:
        return self.status == 410


def validator(value: str | None) -> str | None:
    """An ``ETag`` or ``Last-Modified`` fit to store and send back: printable ASCII of at most
    :data:`MAX_VALIDATOR` characters; anything else (a server's non-ASCII bytes) is dropped, so the next
    request is plain and the source never stalls on a header it cannot send."""
    if value and value.isascii() and value.isprintable() and len(value) <= MAX_VALIDATOR:
        return value
    return None


def conditional_headers(source: PolledSource) -> dict[str, str]:
    headers = {"Accept": "application/rss+xml, application/atom+xml, application/xml;q=0.9, */*;q=0.8"}
    if etag := validator(source.etag):
        headers["If-None-Match"] = etag
    if last_modified := validator(source.last_modified):
        headers["If-Modified-Since"] = last_modified
    return headers


def _min_interval_s(headers: httpx.Headers, head: bytes) -> int | None:
    """The longest of the feed's ``<ttl>`` (minutes) and ``Cache-Control: max-age``: the publisher's floor."""
    floors = []
    if match := _MAX_AGE.search(headers.get("cache-control", "")):
        floors.append(int(match.group(1)))
    if match := _TTL.search(head):
        floors.append(int(match.group(1)) * 60)
    return min(max(floors), int(MAX_INTERVAL.total_seconds())) if floors else None


def payload_key(prefix: str, position: int, source: PolledSource) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", source.name.lower()).strip("-")[:60] or "source"
    return f"{prefix}{position:04d}-{slug}.{_EXTENSIONS[source.fmt]}"


def _store_body(store: ObjectStore, key: str, chunks: Iterator[bytes], fmt: str) -> tuple[StoredObject, int, bytes]:
    """Store a changed body under ``key``: what was stored, the records it delivers, and its first bytes (where
    a ``<ttl>`` is). A body of at most :data:`IN_MEMORY_BODY` bytes is kept in memory, a larger one goes
    through a local temporary file (memory stays bounded whatever its size)."""
    first = bytearray()
    for chunk in chunks:
        first += chunk
        if len(first) > IN_MEMORY_BODY:
            break
    else:
        records = count_payload(io.BytesIO(first), fmt)
        return store.put_stream(key, io.BytesIO(first)), records, bytes(first[:HEAD_BYTES])
    with staged_upload(store, key) as staged:
        staged.write(first)
        for chunk in chunks:
            staged.write(chunk)
        staged.flush()
        with open(staged.name, "rb") as written:  # a reader of its own: a CSV reader closes what it wraps
            records = count_payload(written, fmt)
    return staged.stored, records, bytes(first[:HEAD_BYTES])


def fetch_source(
    client: OutboundClient, store: ObjectStore, source: PolledSource, key: str, now: datetime
) -> FetchOutcome:
    """Check ``source`` once; a changed body is stored under ``key``. Never raises for what the network or
    the publisher did: that is an outcome with an ``error``."""
    try:
        with client.stream(
            "GET", source.url, headers=conditional_headers(source), max_redirects=MAX_REDIRECTS
        ) as answer:
            validators = {
                "etag": validator(answer.headers.get("etag")),
                "last_modified": validator(answer.headers.get("last-modified")),
            }
            common = {"source": source, "status": answer.status_code, "moved_to": answer.permanent_url}
            if answer.status_code == 304:
                return FetchOutcome(
                    **common,
                    etag=validators["etag"] or validator(source.etag),
                    last_modified=validators["last_modified"] or validator(source.last_modified),
                    min_interval_s=_min_interval_s(answer.headers, b""),
                )
            if answer.status_code != 200:
                retry_after = (
                    retry_after_moment(answer.headers.get("retry-after"), now)
                    if answer.status_code in (429, 503)
                    else None
                )
                return FetchOutcome(**common, error=f"HTTP {answer.status_code}", retry_after=retry_after)
            stored, records, head = _store_body(store, key, answer.iter_bytes(), source.fmt)
            return FetchOutcome(
                **common,
                **validators,
                key=key,
                size=stored.size,
                sha256=stored.sha256,
                records=records,
                min_interval_s=_min_interval_s(answer.headers, head),
            )
    except OutboundError as error:
        return FetchOutcome(source=source, status=None, error=str(error), requested=error.requests_sent > 0)
    except Exception as error:  # a payload that cannot be parsed, storage trouble: recorded on the source
        return FetchOutcome(source=source, status=None, error=failure_message(error))


def backoff(error_count: int, rng: random.Random | None = None) -> timedelta:
    """The wait after the ``error_count``-th error in a row: 1 min doubling to 24 h, ±20 % jitter (capped)."""
    base = FIRST_BACKOFF * (2 ** min(max(error_count - 1, 0), 20))
    jitter = (rng or random).uniform(0.8, 1.2)
    return min(base * jitter, MAX_INTERVAL)


def auto_interval(entries_last_week: int, weeks_known: float) -> timedelta:
    """Miniflux's rule: a week divided by the entries it delivered, clamped to 5 min – 24 h; a source with no
    week of history yet is checked hourly while it is learned."""
    if entries_last_week <= 0:
        return LEARNING_INTERVAL if weeks_known < 1 else MAX_INTERVAL
    return min(max(timedelta(days=7) / entries_last_week, MIN_INTERVAL), MAX_INTERVAL)


def next_check(
    now: datetime,
    poll_seconds: int | None,
    auto: timedelta,
    min_interval_s: int | None,
    error_count: int,
    scheduled: datetime | None = None,
) -> datetime:
    """When the source is due again: back-off after an error, else its interval (fixed or ``auto``), never
    sooner than the publisher's floor. The interval counts from when the check was ``scheduled`` (its
    ``next_check_at``), so a sensor tick or a run's start-up does not push every later check back: a
    ``poll: 1m`` source is fetched every minute, not every minute plus the delays. A check a whole interval
    late, or a publisher's floor, counts from now."""
    if error_count:
        return now + backoff(error_count)
    interval = timedelta(seconds=poll_seconds) if poll_seconds else auto
    if min_interval_s:
        interval = max(interval, timedelta(seconds=min_interval_s))
    on_time = scheduled is not None and not min_interval_s and scheduled <= now < scheduled + interval
    return (scheduled if on_time else now) + interval
