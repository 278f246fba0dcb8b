"""YouTube: the Data API v3, ``search.list`` (newest videos for a query or a channel) or ``playlistItems.list``
(a playlist's videos: a channel's uploads, ``UU…`` for channel ``UC…``), then ``videos.list`` for their
statistics, paged by ``pageToken``.

Each call costs **quota units**, which are its credits: ``search.list`` 100, ``playlistItems.list`` 1,
``videos.list`` 1, so one page costs 101 (a search) or 2 (a playlist), and a cycle at most ``max_pages``
times that (the source's ``cost.per_request`` when the catalog gives none), reserved before the first
request like any source's. Following a channel through its uploads playlist is fifty times cheaper than
searching it, and sees every upload rather than what search ranks. Keys come from the pool
(:mod:`.credentials`): a key answered ``403 quotaExceeded`` rests until the quota day resets and the
same request goes out again with the next key; when every key rests, the fetch fails with that reason
and the host waits for the reset. The key is added to each request as it is sent and never stored:
rows link to ``https://www.youtube.com/watch?v=<id>``, errors name the host and the API's reason only.

``search.list`` answers ``{"nextPageToken", "items": [{"id": {"kind": "youtube#video", "videoId"},
"snippet": {"publishedAt", "channelId", "title", "description", "channelTitle"}}]}``;
``playlistItems.list`` answers ``{"nextPageToken", "items": [{"snippet": {"title", "description",
"videoOwnerChannelId", "videoOwnerChannelTitle", "resourceId": {"videoId"}}, "contentDetails":
{"videoId", "videoPublishedAt"}}]}`` (a private or deleted video has no ``videoPublishedAt`` and is
skipped); ``videos.list`` answers ``{"items": [{"id", "statistics": {"viewCount", "likeCount",
"commentCount"}}]}`` (counts as text; a hidden count is absent).
"""

from __future__ import annotations

import re
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
PLAYLIST_UNITS = 1
VIDEOS_UNITS = 1
WATCH = "https://www.youtube.com/watch?v="
SEARCH_PATH = "/youtube/v3/search"
PLAYLIST_PATH = "/youtube/v3/playlistItems"
CHANNEL_ID = re.compile(r"UC[A-Za-z0-9_-]{22}")
_SEARCH_ONLY = ("q", "channelId", "regionCode", "relevanceLanguage", "publishedAfter")


def uploads_playlist(channel_id: str) -> str:
    """The playlist of every upload of channel ``UC…``: ``UU…``; a ValueError for what is not a channel id."""
    if not CHANNEL_ID.fullmatch(channel_id):
        raise ValueError("not a YouTube channel id (UC and 22 letters, digits, - or _)")
    return "UU" + channel_id[2:]


class YoutubeParams(ArenaParams):
    """``search.list``'s query (terms and/or a channel, where and in which language, since when), or the
    ``playlistItems.list`` of one playlist (a channel's uploads: :func:`uploads_playlist`)."""

    q: str | None = Field(default=None, min_length=1)
    channelId: str | None = Field(default=None, pattern=CHANNEL_ID.pattern)  # noqa: N815 (the API's name)
    playlistId: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]{13,64}$")  # noqa: N815
    regionCode: str | None = Field(default=None, pattern=r"^[A-Z]{2}$")  # noqa: N815
    relevanceLanguage: str | None = Field(default=None, pattern=r"^[a-z]{2}$")  # noqa: N815
    publishedAfter: str | None = None  # noqa: N815
    maxResults: int = Field(default=50, ge=1, le=50)  # noqa: N815
    # set by the validator: what the endpoint needs (the search's are fixed, the playlist's too)
    part: Literal["snippet", "snippet,contentDetails"] | None = None
    type: Literal["video"] | None = None
    order: Literal["date"] | None = None

    @model_validator(mode="after")
    def _something(self) -> YoutubeParams:
        if self.playlistId is not None:
            given = [name for name in _SEARCH_ONLY if getattr(self, name) is not None]
            if given:
                raise ValueError(f"a playlist takes no search parameters ({', '.join(given)})")
            self.part = "snippet,contentDetails"
            return self
        if self.q is None and self.channelId is None:
            raise ValueError("give q and/or channelId, or a playlistId")
        if self.publishedAfter is not None:
            parse_timestamp(self.publishedAfter)
        self.part, self.type, self.order = "snippet", "video", "date"
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
    max_pages = 2  # 100 videos; a search's cycle is 202 units, and a day's default quota (10,000) ~49 of them

    def endpoint(self, url: str, params: ArenaParams) -> str:
        path = PLAYLIST_PATH if params.playlistId else SEARCH_PATH
        if not httpx.URL(url).path.endswith(path):
            raise ValueError(
                f"must be the Data API's {path.rsplit('/', 1)[1]} endpoint, https://www.googleapis.com{path}"
            )
        return super().endpoint(url, params)

    def default_cost_of(self, params: ArenaParams) -> float:
        """A search's pages cost 101 units, a playlist's 2."""
        return float(self.max_pages * ((PLAYLIST_UNITS if params.playlistId else SEARCH_UNITS) + VIDEOS_UNITS))

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
        units = PLAYLIST_UNITS if httpx.URL(source.url).path.endswith(PLAYLIST_PATH) else SEARCH_UNITS
        body = self._call(client, engine, source, self.page_url(source.url, cursor), units, now, cycle)
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
        kind = answer.get("kind")
        if kind not in _READERS or not isinstance(items, list):
            raise MalformedPage("not a youtube#searchListResponse or youtube#playlistItemListResponse with items")
        token = answer.get("nextPageToken")
        rows = [row for item in items if isinstance(item, dict) and (row := _READERS[kind](item)) is not None]
        return Page(rows, token if isinstance(token, str) and token else None)


def _search_result(item: dict[str, Any]) -> dict[str, Any] | None:
    video = (item.get("id") or {}).get("videoId")
    if not video:
        return None  # a channel or playlist among the results
    snippet = _snippet(item, "a search result")
    return _video_row(video, snippet, snippet.get("publishedAt"), snippet.get("channelTitle"), snippet.get("channelId"))


def _playlist_item(item: dict[str, Any]) -> dict[str, Any] | None:
    details = item.get("contentDetails")
    if not isinstance(details, dict) or not details.get("videoPublishedAt"):
        return None  # a private or deleted video keeps its place in the playlist, without a publication
    snippet = _snippet(item, "a playlist item")
    video = details.get("videoId") or (snippet.get("resourceId") or {}).get("videoId")
    if not video:
        raise MalformedPage("a playlist item without contentDetails.videoId")
    owner, channel = snippet.get("videoOwnerChannelTitle"), snippet.get("videoOwnerChannelId")
    return _video_row(video, snippet, details["videoPublishedAt"], owner, channel)


def _snippet(item: dict[str, Any], what: str) -> dict[str, Any]:
    snippet = item.get("snippet")
    if not isinstance(snippet, dict):
        raise MalformedPage(f"{what} without a snippet")
    return snippet


def _video_row(video: str, snippet: dict, published_at: str | None, author: str | None, channel: str | None) -> dict:
    if not published_at:
        raise MalformedPage("a video without its publication time")
    try:
        published = parse_timestamp(published_at)
    except (ValueError, OverflowError) as error:
        raise MalformedPage(f"publishedAt: {error}") from None
    return {
        "external_id": video,
        "url": WATCH + video,
        "title": snippet.get("title"),
        "text": snippet.get("description") or None,
        "author": author,
        "author_handle": channel,
        "published_at": published.isoformat() if published else None,
        "platform": PLATFORM,
        "content_type": "video",
    }


_READERS = {"youtube#searchListResponse": _search_result, "youtube#playlistItemListResponse": _playlist_item}


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
