"""YouTube: the Data API v3, ``search.list`` (newest videos for a query or a channel), then ``videos.list``
for their statistics, paged by ``pageToken``.

Each call costs **quota units**, which are its credits: ``search.list`` 100, ``videos.list`` 1, so one
page costs 101 and a cycle at most ``max_pages`` × 101 (the source's ``cost.per_request`` when the
catalog gives none), reserved before the first request like any source's. Keys come from the pool
(:mod:`.credentials`): a key answered ``403 quotaExceeded`` rests until the quota day resets and the
same request goes out again with the next key; when every key rests, the fetch fails with that reason
and the host waits for the reset. The key is added to each request as it is sent and never stored:
rows link to ``https://www.youtube.com/watch?v=<id>``, errors name the host and the API's reason only.

``search.list`` answers ``{"nextPageToken", "items": [{"id": {"kind": "youtube#video", "videoId"},
"snippet": {"publishedAt", "channelId", "title", "description", "channelTitle"}}]}``; ``videos.list``
answers ``{"items": [{"id", "statistics": {"viewCount", "likeCount", "commentCount"}}]}`` (counts as
text; a hidden count is absent).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar, Literal

import httpx
import orjson
from pydantic import Field, model_validator

from observatory_assets.defs.collection.arenas import credentials
from observatory_assets.defs.collection.arenas.base import (
    MAX_REDIRECTS,
    PACER,
    Arena,
    ArenaParams,
    Cycle,
    MalformedPage,
    Page,
    count,
    json_body,
    with_query,
)
from observatory_assets.defs.collection.fetcher import PolledSource
from observatory_assets.defs.ingestion.normalizing import parse_timestamp
from resources.outbound import OutboundClient
from resources.settings import platform_settings

PLATFORM = "youtube"
SEARCH_UNITS = 100
VIDEOS_UNITS = 1
WATCH = "https://www.youtube.com/watch?v="


class YoutubeParams(ArenaParams):
    """``search.list``'s query: terms and/or a channel, where and in which language, since when."""

    q: str | None = Field(default=None, min_length=1)
    channelId: str | None = Field(default=None, pattern=r"^UC[A-Za-z0-9_-]{22}$")  # noqa: N815 (the API's name)
    regionCode: str | None = Field(default=None, pattern=r"^[A-Z]{2}$")  # noqa: N815
    relevanceLanguage: str | None = Field(default=None, pattern=r"^[a-z]{2}$")  # noqa: N815
    publishedAfter: str | None = None  # noqa: N815
    maxResults: int = Field(default=50, ge=1, le=50)  # noqa: N815
    part: Literal["snippet"] = "snippet"
    type: Literal["video"] = "video"
    order: Literal["date"] = "date"

    @model_validator(mode="after")
    def _something(self) -> YoutubeParams:
        if self.q is None and self.channelId is None:
            raise ValueError("give q and/or channelId")
        if self.publishedAfter is not None:
            parse_timestamp(self.publishedAfter)
        return self


def api_error_reason(body: bytes) -> str | None:
    """The first ``error.errors[].reason`` of a Google API error body (``quotaExceeded``, ``keyInvalid``)."""
    try:
        errors = orjson.loads(body)["error"]["errors"]
        return str(errors[0]["reason"])
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError):
        return None


class Youtube(Arena):
    format = PLATFORM
    params: ClassVar[type[ArenaParams]] = YoutubeParams
    max_pages = 2  # 100 videos, 202 units a cycle: a day's default quota (10,000) is ~49 cycles
    default_cost = float(max_pages * (SEARCH_UNITS + VIDEOS_UNITS))

    def endpoint(self, url: str, params: ArenaParams) -> str:
        if not httpx.URL(url).path.endswith("/youtube/v3/search"):
            raise ValueError("must be the Data API's search endpoint, https://www.googleapis.com/youtube/v3/search")
        return super().endpoint(url, params)

    def page_url(self, url: str, cursor: str | None) -> str:
        return with_query(url, {"pageToken": cursor}) if cursor else url

    def fetch_page(
        self, client: OutboundClient, source: PolledSource, cursor: str | None, now: datetime, cycle: Cycle
    ) -> Page | None:
        """search.list, then videos.list for the page's statistics, each with the first key that has quota."""
        engine = credentials.pool_engine()
        configured = platform_settings().youtube_api_keys
        keys = configured.get_secret_value().split(",") if configured else []
        credentials.enrol(engine, PLATFORM, [key.strip() for key in keys if key.strip()])
        cycle.pages += 1
        body = self._call(client, engine, source, self.page_url(source.url, cursor), SEARCH_UNITS, now, cycle)
        try:
            page = self.parse(body, source.url) if body is not None else None
            ids = [row["external_id"] for row in page.rows] if page else []
            if ids:
                search = httpx.URL(source.url)
                videos = search.copy_with(path=search.path.rsplit("/", 1)[0] + "/videos", query=None)
                url = with_query(str(videos), {"part": "statistics", "id": ",".join(ids)})
                stats = self._call(client, engine, source, url, VIDEOS_UNITS, now, cycle)
                if stats is None:
                    return None
                _add_statistics(page.rows, stats)
            return page
        except MalformedPage as error:
            cycle.error = f"page {cycle.pages} malformed: {error}"
            return None

    def _call(
        self, client: OutboundClient, engine, source: PolledSource, url: str, units: int, now: datetime, cycle: Cycle
    ) -> bytes | None:
        """GET ``url`` with the pool's first key that has quota; the body, or None with the failure on ``cycle``."""
        for key in credentials.ready_keys(engine, PLATFORM, now):
            PACER.wait(source.host, self.min_spacing_s)
            headers = {"Accept": "application/json"}
            keyed = with_query(url, {"key": key.key})  # sent, never stored
            with client.stream("GET", keyed, headers=headers, max_redirects=MAX_REDIRECTS) as answer:
                cycle.status, body = answer.status_code, answer.read()
            reason = api_error_reason(body) if answer.status_code != 200 else None
            if reason in ("quotaExceeded", "dailyLimitExceeded"):
                credentials.record_use(engine, key.id, 0, now, rest_until=credentials.quota_reset(now))
                continue
            credentials.record_use(engine, key.id, units, now)
            if answer.status_code != 200:
                cycle.error = f"HTTP {answer.status_code} on page {cycle.pages}" + (f" ({reason})" if reason else "")
                return None
            return body
        cycle.error = f"page {cycle.pages}: every {PLATFORM} key's quota is spent until the quota day resets"
        cycle.retry_after = credentials.quota_reset(now)
        return None

    def parse(self, body: bytes, url: str) -> Page:
        answer = json_body(body, "answer")
        items = answer.get("items")
        if answer.get("kind") != "youtube#searchListResponse" or not isinstance(items, list):
            raise MalformedPage("not a youtube#searchListResponse with items")
        token = answer.get("nextPageToken")
        rows = [_row(item) for item in items if isinstance(item, dict) and (item.get("id") or {}).get("videoId")]
        return Page(rows, token if isinstance(token, str) and token else None)


def _row(item: dict[str, Any]) -> dict[str, Any]:
    snippet = item.get("snippet")
    if not isinstance(snippet, dict) or not snippet.get("publishedAt"):
        raise MalformedPage("a search result without snippet.publishedAt")
    try:
        published = parse_timestamp(snippet["publishedAt"])
    except (ValueError, OverflowError) as error:
        raise MalformedPage(f"publishedAt: {error}") from None
    video = item["id"]["videoId"]
    return {
        "external_id": video,
        "url": WATCH + video,
        "title": snippet.get("title"),
        "text": snippet.get("description") or None,
        "author": snippet.get("channelTitle"),
        "author_handle": snippet.get("channelId"),
        "published_at": published.isoformat() if published else None,
        "platform": PLATFORM,
        "content_type": "video",
    }


def _add_statistics(rows: list[dict[str, Any]], body: bytes) -> None:
    answer = json_body(body, "videos")
    if not isinstance(answer.get("items"), list):
        raise MalformedPage("videos.list answer without items")
    stats = {v.get("id"): v.get("statistics") or {} for v in answer["items"] if isinstance(v, dict)}
    for row in rows:
        statistics = stats.get(row["external_id"], {})
        row.update(
            views=count(statistics.get("viewCount")),
            likes=count(statistics.get("likeCount")),
            comments=count(statistics.get("commentCount")),
        )
