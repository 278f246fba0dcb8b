"""The one interface every arena collector implements, and the pager that drives it.

An *arena* is a platform's API polled as a catalog source (``format: reddit``, ``bluesky``…). Each
arena module describes only what is its own: the catalog fields it accepts (``params``, validated at
``sources sync`` and merged into the stored endpoint URL), how the next page is asked for (its cursor),
how one answer reads as rows, and what its rate-limit headers say. :func:`collect_pages` does the rest
the same way for all of them:

* every request goes through the guarded outbound client, spaced per host by the arena's rule
  (GDELT asks for one request per 5 s), at most ``max_pages`` pages a cycle;
* paging stops at the source's **high-water mark** (the newest publication time collected, kept in the
  source's validator column where a feed keeps its ETag: both say "what I already have"), at an empty
  page, at the last page, or when the platform says the quota is spent (the host then waits until the
  quota resets, like a ``Retry-After``);
* a 429/503 with ``Retry-After``, any other error status, a network failure and a malformed or truncated
  page are a failed fetch with a reason naming the page; the rows of earlier pages are kept (stored and
  loaded) and the mark is not advanced, so the next cycle pages down to the old mark again and nothing
  in between is skipped;
* every row of the cycle's pages goes into one JSONL payload of the cycle's run, with the platform's
  fields mapped to the item columns (``platform``, ``content_type``, ``author_handle``, ``views``,
  ``likes``, ``shares``, ``comments``).

Credits are reserved by the poller before the first request: the source's ``cost.per_request`` is what
one cycle of the source may spend, its pages included (:meth:`Arena.default_cost_of` when the catalog
gives none: YouTube's quota units; the other arenas are free APIs).
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
import orjson
from pydantic import BaseModel, ConfigDict

from observatory_assets.defs.collection.fetcher import FetchOutcome, PolledSource
from observatory_assets.lib.errors import failure_message
from resources.http_headers import retry_after_moment
from resources.object_store import ObjectStore, staged_upload
from resources.outbound import OutboundClient, OutboundError

MAX_REDIRECTS = 3


class MalformedPage(ValueError):
    """An answer that does not read as the API's documented shape; the message is the reason."""


class ArenaParams(BaseModel):
    """The catalog fields of an arena source (``params:``); unknown fields are refused at sync."""

    model_config = ConfigDict(extra="forbid")


@dataclass
class Page:
    """One answer read: its rows (newest first, each with ``published_at``) and the next page's cursor."""

    rows: list[dict[str, Any]]
    cursor: str | None = None


@dataclass
class Request:
    """What to send for one page: the URL (without secrets when stored) and the headers."""

    url: str
    headers: dict[str, str] = field(default_factory=dict)


class Arena(ABC):
    """One platform's API as a catalog format."""

    #: The catalog ``format`` and the items' ``platform``.
    format: ClassVar[str]
    params: ClassVar[type[ArenaParams]] = ArenaParams
    #: At most this many pages in one cycle of one source.
    max_pages: ClassVar[int] = 10
    #: The least time between two requests to one host (the platform's published rule).
    min_spacing_s: ClassVar[float] = 0.0
    accept: ClassVar[str] = "application/json"

    def endpoint(self, url: str, params: ArenaParams) -> str:
        """The full endpoint stored for the source: ``url`` with the params merged into its query; a
        ValueError for a URL that is not this arena's endpoint shape."""
        return with_query(url, params.model_dump(exclude_none=True, by_alias=True))

    def default_cost_of(self, params: ArenaParams) -> float:
        """Credits one cycle of a source with ``params`` may spend when the catalog gives no
        ``cost.per_request`` (a paid API's units; free APIs: none)."""
        return 0.0

    def request(self, url: str, cursor: str | None, client: OutboundClient) -> Request:
        """The request for the page at ``cursor`` (None: the newest)."""
        return Request(self.page_url(url, cursor), {"Accept": self.accept})

    @abstractmethod
    def page_url(self, url: str, cursor: str | None) -> str:
        """The URL of the page at ``cursor``."""

    @abstractmethod
    def parse(self, body: bytes, url: str) -> Page:
        """The page's rows and next cursor; :class:`MalformedPage` when it does not read."""

    def fetch_page(
        self, client: OutboundClient, source: PolledSource, cursor: str | None, now: datetime, cycle: Cycle
    ) -> Page | None:
        """Send one page's request and read it; a failure is recorded on ``cycle`` and None returned."""
        request = self.request(source.url, cursor, client)
        PACER.wait(source.host, self.min_spacing_s)
        number = cycle.pages + 1
        with client.stream("GET", request.url, headers=request.headers, max_redirects=MAX_REDIRECTS) as answer:
            cycle.pages, cycle.status = number, answer.status_code
            if answer.status_code != 200:
                waited = retry_after_moment(answer.headers.get("retry-after"), now)
                cycle.retry_after = waited or self.quota_spent_until(answer.headers, now)
                cycle.error = f"HTTP {answer.status_code} on page {number}"
                return None
            cycle.retry_after = self.quota_spent_until(answer.headers, now)
            body = answer.read()
        try:
            return self.parse(body, request.url)
        except MalformedPage as error:
            cycle.error = f"page {number} malformed: {error}"
            return None

    def quota_spent_until(self, headers: httpx.Headers, now: datetime) -> datetime | None:
        """When the platform's quota allows the next request, if this answer says it is spent."""
        return None


def with_query(url: str, params: dict[str, Any]) -> str:
    """``url`` with ``params`` set in its query string (lists repeat the key); other parameters kept."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in params]
    for key, value in params.items():
        for one in value if isinstance(value, list) else [value]:
            query.append((key, str(one).lower() if isinstance(one, bool) else str(one)))
    return urlunsplit(parts._replace(query=urlencode(query)))


def json_body(body: bytes, what: str) -> dict[str, Any]:
    """A JSON object, or :class:`MalformedPage` (a truncated answer does not parse)."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise MalformedPage(f"not JSON ({error.args[0][:80]})") from None
    if not isinstance(value, dict):
        raise MalformedPage(f"{what}: a JSON {type(value).__name__}, not an object")
    return value


def count(value: Any) -> int | None:
    """A non-negative whole count from a number or digit text (YouTube sends counts as text)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and value >= 0:
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


class _HostPacer:
    """Keeps requests to one host at least an arena's ``min_spacing_s`` apart, across a process's threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._next: dict[str, float] = {}

    def wait(self, host: str, spacing: float) -> None:
        if spacing <= 0:
            return
        with self._lock:
            now = time.monotonic()
            at = max(now, self._next.get(host, now))
            self._next[host] = at + spacing
        if at > now:
            time.sleep(at - now)


PACER = _HostPacer()


def high_water(source: PolledSource) -> datetime | None:
    """The source's mark: the newest publication time collected (None: never collected)."""
    try:
        return datetime.fromisoformat(source.etag) if source.etag else None
    except ValueError:
        return None


@dataclass
class Cycle:
    """What the pages of one cycle gathered so far."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    pages: int = 0
    status: int | None = None
    error: str | None = None
    retry_after: datetime | None = None


def collect_pages(
    arena: Arena, client: OutboundClient, store: ObjectStore, source: PolledSource, key: str, now: datetime
) -> FetchOutcome:
    """One cycle of an arena source (see the module docstring); never raises for what the platform did."""
    mark = high_water(source)
    cycle = Cycle()
    cursor: str | None = None
    try:
        while cycle.pages < arena.max_pages:
            page = arena.fetch_page(client, source, cursor, now, cycle)
            if page is None:
                break
            fresh = [row for row in page.rows if mark is None or _published(row) > mark]
            cycle.rows += fresh
            if not page.rows or len(fresh) < len(page.rows) or page.cursor is None or cycle.retry_after:
                break
            cursor = page.cursor
    except OutboundError as error:
        cycle.error = f"page {cycle.pages + 1}: {error}"
        requested = cycle.pages + error.requests_sent > 0
        if not cycle.rows:
            return FetchOutcome(source=source, status=None, error=cycle.error, requested=requested)
    return _outcome(store, source, key, mark, cycle)


def _published(row: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(row["published_at"]) if row.get("published_at") else datetime.min.replace(tzinfo=UTC)


def _outcome(store: ObjectStore, source: PolledSource, key: str, mark: datetime | None, cycle: Cycle) -> FetchOutcome:
    """The cycle as the poller records it: the rows stored as one JSONL payload, the new mark."""
    newest = max((_published(row) for row in cycle.rows if row.get("published_at")), default=None)
    advanced = newest if newest is not None and (mark is None or newest > mark) else mark
    kept = advanced if cycle.error is None else mark
    common = {
        "source": source,
        "status": cycle.status,
        "etag": kept.isoformat() if kept else None,
        "error": cycle.error,
        "retry_after": cycle.retry_after,
        "requested": cycle.pages > 0,
    }
    if not cycle.rows:
        return FetchOutcome(**common)
    try:
        with staged_upload(store, key, "application/x-ndjson") as staged:
            for row in cycle.rows:
                staged.write(orjson.dumps(row) + b"\n")
        return FetchOutcome(
            **common, key=key, size=staged.stored.size, sha256=staged.stored.sha256, records=len(cycle.rows)
        )
    except Exception as error:  # storage trouble: recorded on the source like any failed fetch
        return FetchOutcome(source=source, status=cycle.status, error=failure_message(error))
