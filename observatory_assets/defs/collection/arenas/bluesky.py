"""Bluesky: ``app.bsky.feed.searchPosts`` (a query) or ``app.bsky.feed.getAuthorFeed`` (an actor's posts)
on a public AppView (``https://public.api.bsky.app/xrpc/...``), paged by ``cursor``.

searchPosts answers ``{"cursor": …, "hitsTotal": …, "posts": [PostView…]}`` (``sort=latest``: newest
first); getAuthorFeed answers ``{"cursor": …, "feed": [{"post": PostView, "reason": …}]}``, newest first
(a repost's ``reason`` is skipped: it is someone else's post). A PostView carries its ``uri``
(``at://did/app.bsky.feed.post/<rkey>``, the external id), the author's handle and display name, the
record (``text``, ``createdAt``, ``langs``) and ``likeCount`` → likes, ``repostCount`` → shares,
``replyCount`` → comments. The AppView publishes no rate-limit headers for unauthenticated reads beyond
429 with ``Retry-After``, which the pager honours.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import httpx
from pydantic import Field, model_validator

from observatory_assets.defs.collection.arenas.base import (
    Arena,
    ArenaParams,
    MalformedPage,
    Page,
    count,
    json_body,
    with_query,
)
from observatory_assets.defs.ingestion.normalizing import parse_timestamp

SEARCH = "app.bsky.feed.searchPosts"
AUTHOR_FEED = "app.bsky.feed.getAuthorFeed"
WEB = "https://bsky.app"


class BlueskyParams(ArenaParams):
    """searchPosts' ``q``, ``lang``, ``since``, ``until``, ``sort``; or getAuthorFeed's ``actor`` and ``filter``."""

    q: str | None = Field(default=None, min_length=1)
    lang: str | None = Field(default=None, pattern=r"^[a-z]{2,3}$")
    since: str | None = None
    until: str | None = None
    sort: Literal["latest", "top"] | None = None
    actor: str | None = Field(default=None, min_length=1)
    filter: Literal["posts_with_replies", "posts_no_replies", "posts_with_media", "posts_and_author_threads"] | None = (
        None
    )
    limit: int = Field(default=100, ge=1, le=100)

    @model_validator(mode="after")
    def _one_kind(self) -> BlueskyParams:
        if (self.q is None) == (self.actor is None):
            raise ValueError("give q (searchPosts) or actor (getAuthorFeed), not both")
        for moment in (self.since, self.until):
            if moment is not None:
                parse_timestamp(moment)
        return self


class Bluesky(Arena):
    format = "bluesky"
    params: ClassVar[type[ArenaParams]] = BlueskyParams
    max_pages = 10

    def endpoint(self, url: str, params: ArenaParams) -> str:
        method = httpx.URL(url).path.rsplit("/", 1)[-1]
        expected = SEARCH if getattr(params, "q", None) else AUTHOR_FEED
        if method != expected:
            raise ValueError(f"must be an AppView's /xrpc/{expected} endpoint for these params")
        if method == SEARCH and getattr(params, "sort", None) is None:
            params = params.model_copy(update={"sort": "latest"})  # newest first, as the high-water mark needs
        return super().endpoint(url, params)

    def page_url(self, url: str, cursor: str | None) -> str:
        return with_query(url, {"cursor": cursor}) if cursor else url

    def parse(self, body: bytes, url: str) -> Page:
        answer = json_body(body, "answer")
        if "posts" in answer:
            views = answer["posts"]
        elif "feed" in answer:
            views = [
                entry.get("post")
                for entry in answer["feed"] if isinstance(entry, dict) and not entry.get("reason")
            ] if isinstance(answer["feed"], list) else None  # fmt: skip
        else:
            raise MalformedPage("neither posts nor feed")
        if not isinstance(views, list):
            raise MalformedPage("posts/feed is not a list")
        cursor = answer.get("cursor")
        return Page([_row(view) for view in views], cursor if isinstance(cursor, str) and cursor else None)


def _row(view: Any) -> dict[str, Any]:
    if (
        not isinstance(view, dict)
        or not isinstance(view.get("record"), dict)
        or not isinstance(view.get("author"), dict)
    ):
        raise MalformedPage("a post without record or author")
    uri, record, author = view.get("uri"), view["record"], view["author"]
    if not isinstance(uri, str) or not uri.startswith("at://") or not record.get("createdAt"):
        raise MalformedPage("a post without an at:// uri or createdAt")
    try:
        published = parse_timestamp(record["createdAt"])
    except (ValueError, OverflowError) as error:
        raise MalformedPage(f"createdAt: {error}") from None
    handle = author.get("handle")
    langs = record.get("langs") if isinstance(record.get("langs"), list) else []
    return {
        "external_id": uri,
        # by DID, not handle: the link works and names nobody whose handle is not kept (see docs/actors.md)
        "url": f"{WEB}/profile/{author.get('did') or handle}/post/{uri.rsplit('/', 1)[-1]}",
        "text": record.get("text"),
        "author": author.get("displayName") or handle,
        "author_handle": handle,
        "published_at": published.isoformat() if published else None,
        "language": langs[0] if langs else None,
        "platform": "bluesky",
        "content_type": "post",
        "likes": count(view.get("likeCount")),
        "shares": count(view.get("repostCount")),
        "comments": count(view.get("replyCount")),
        "quotes": count(view.get("quoteCount")),
        "author_did": author.get("did"),
        "cid": view.get("cid"),
    }
