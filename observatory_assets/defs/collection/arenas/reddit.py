"""Reddit: a subreddit's listing (``/r/<name>/new.json``) or a search (``/search.json``), paged by ``after``.

A listing answers ``{"kind": "Listing", "data": {"after": "t3_…", "children": [{"kind": "t3", "data":
{...}}]}}``, newest first with ``sort=new``. Each post becomes a row: its fullname (``t3_…``) is the
external id, ``score`` counts as likes and ``num_comments`` as comments, the author's name is the
handle. ``X-Ratelimit-Remaining`` / ``X-Ratelimit-Reset`` (seconds until the window resets) are
honoured: when nothing remains, paging stops and the host waits for the reset.

With ``OBSERVATORY_REDDIT_CLIENT_ID`` / ``_SECRET`` set, requests carry an application-only OAuth
token (client credentials, fetched from ``OBSERVATORY_REDDIT_TOKEN_URL`` through the guarded client
and kept until it expires) for the higher rate limit; point the source's ``url`` at
``https://oauth.reddit.com/...`` then. The token never leaves the request headers.
"""

from __future__ import annotations

import base64
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Literal

import httpx
from pydantic import Field

from observatory_assets.defs.collection.arenas.base import (
    Arena,
    ArenaParams,
    MalformedPage,
    Page,
    Request,
    count,
    json_body,
    with_query,
)
from resources.outbound import OutboundClient, OutboundError
from resources.settings import platform_settings

WEB = "https://www.reddit.com"


class RedditParams(ArenaParams):
    """A listing's or a search's query parameters (Reddit's own names)."""

    q: str | None = Field(default=None, min_length=1, description="Search terms (``/search.json`` only).")
    sort: Literal["new", "relevance", "hot", "top", "comments"] = "new"
    t: Literal["hour", "day", "week", "month", "year", "all"] | None = None
    restrict_sr: bool | None = None
    limit: int = Field(default=100, ge=1, le=100)


class _Tokens:
    """The application-only OAuth token, shared by the process's threads until it expires."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._token: str | None = None
        self._until = 0.0

    def bearer(self, client: OutboundClient) -> str | None:
        settings = platform_settings()
        if not (settings.reddit_client_id and settings.reddit_client_secret):
            return None
        with self._lock:
            if self._token is None or time.monotonic() >= self._until:
                self._token, lifetime = _client_credentials(
                    client,
                    settings.reddit_token_url,
                    settings.reddit_client_id,
                    settings.reddit_client_secret.get_secret_value(),
                )
                self._until = time.monotonic() + max(lifetime - 60, 30)
            return self._token


def _client_credentials(client: OutboundClient, url: str, client_id: str, secret: str) -> tuple[str, float]:
    """An application-only token (``grant_type=client_credentials``) and its lifetime in seconds."""
    basic = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    answer, body = client.request(
        "POST",
        url,
        headers={"Authorization": f"Basic {basic}", "Content-Type": "application/x-www-form-urlencoded"},
        content=b"grant_type=client_credentials",
    )
    host = httpx.URL(url).host
    if answer.status_code != 200:
        raise OutboundError(f"{host}: the OAuth token request answered HTTP {answer.status_code}")
    try:
        granted = json_body(body, "token")
        return str(granted["access_token"]), float(granted.get("expires_in") or 3600)
    except (MalformedPage, KeyError, TypeError, ValueError):
        raise OutboundError(f"{host}: the OAuth token answer is not a token") from None


class Reddit(Arena):
    format = "reddit"
    params: ClassVar[type[ArenaParams]] = RedditParams
    max_pages = 10  # a listing holds at most 1,000 posts: 10 pages of 100

    def __init__(self) -> None:
        self._tokens = _Tokens()

    def endpoint(self, url: str, params: ArenaParams) -> str:
        path = httpx.URL(url).path
        if not path.endswith(".json"):
            raise ValueError("must be a Reddit JSON endpoint such as /r/<name>/new.json or /search.json")
        if getattr(params, "q", None) and not path.endswith("search.json"):
            raise ValueError("params.q needs a search endpoint (/search.json or /r/<name>/search.json)")
        return super().endpoint(url, params)

    def request(self, url: str, cursor: str | None, client: OutboundClient) -> Request:
        request = super().request(url, cursor, client)
        token = self._tokens.bearer(client)
        if token:
            request.headers["Authorization"] = f"bearer {token}"
        return request

    def page_url(self, url: str, cursor: str | None) -> str:
        return with_query(url, {"after": cursor, "raw_json": 1} if cursor else {"raw_json": 1})

    def parse(self, body: bytes, url: str) -> Page:
        listing = json_body(body, "listing")
        data = listing.get("data")
        if listing.get("kind") != "Listing" or not isinstance(data, dict) or not isinstance(data.get("children"), list):
            raise MalformedPage("not a Listing with data.children")
        rows = [_row(child) for child in data["children"] if isinstance(child, dict) and child.get("kind") == "t3"]
        after = data.get("after")
        return Page(rows, after if isinstance(after, str) and after else None)

    def quota_spent_until(self, headers: httpx.Headers, now: datetime) -> datetime | None:
        remaining, reset = headers.get("x-ratelimit-remaining"), headers.get("x-ratelimit-reset")
        try:
            spent = remaining is not None and float(remaining) < 1
            return now + timedelta(seconds=float(reset or 60)) if spent else None
        except ValueError:
            return None


def _row(child: dict[str, Any]) -> dict[str, Any]:
    post = child.get("data")
    if not isinstance(post, dict) or not post.get("id") or not isinstance(post.get("created_utc"), int | float):
        raise MalformedPage("a t3 child without id or created_utc")
    permalink = post.get("permalink")
    author = post.get("author") if post.get("author") not in (None, "[deleted]") else None
    return {
        "external_id": post.get("name") or f"t3_{post['id']}",
        "url": f"{WEB}{permalink}" if isinstance(permalink, str) and permalink.startswith("/") else post.get("url"),
        "title": post.get("title"),
        "text": post.get("selftext") or None,
        "author": author,
        "author_handle": author,
        "published_at": datetime.fromtimestamp(post["created_utc"], tz=UTC).isoformat(),
        "platform": "reddit",
        "content_type": "post",
        "likes": count(post.get("score")),
        "comments": count(post.get("num_comments")),
        "subreddit": post.get("subreddit"),
        "link_url": post.get("url"),
        "upvote_ratio": post.get("upvote_ratio"),
    }
