"""Telegram: a public channel's web preview (``https://t.me/s/<channel>``), paged by ``before``.

No API key is needed: the preview is an HTML page of the channel's latest posts (about 20), each a
``div.tgme_widget_message`` with ``data-post="<channel>/<id>"``, its text in
``div.tgme_widget_message_text``, its time in ``time[datetime]`` and its view counter in
``span.tgme_widget_message_views`` (``1.2K`` is 1,200, ``3M`` 3,000,000). Older posts are at
``?before=<id>``, which the page's ``a.tme_messages_more[data-before]`` names. The page is read with
the standard library's HTML parser (tolerant of unclosed tags, as a browser is); a page without the
channel's history container is malformed (a login wall, an error page).
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any

import httpx

from observatory_assets.defs.collection.arenas.base import Arena, ArenaParams, MalformedPage, Page, with_query
from observatory_assets.defs.ingestion.normalizing import parse_timestamp

_COUNTER = re.compile(r"^\s*(\d+(?:[.,]\d+)?)\s*([KkMm]?)\s*$")
_SCALE = {"": 1, "k": 1_000, "m": 1_000_000}
_BLOCKS = {"br", "p", "div"}


def views(counter: str | None) -> int | None:
    """A Telegram view counter as a number: ``'987'`` → 987, ``'1.2K'`` → 1200, ``'3M'`` → 3000000."""
    match = _COUNTER.match(counter or "")
    if not match:
        return None
    number, unit = match.groups()
    return round(float(number.replace(",", ".")) * _SCALE[unit.lower()])


class _Preview(HTMLParser):
    """Collects the posts of a channel preview page, and the cursor of the older page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.posts: list[dict[str, Any]] = []
        self.before: str | None = None
        self.history = False
        self._depth = 0  # open <div>s
        self._post_depth: int | None = None
        self._text_depth: int | None = None
        self._capture: str | None = None  # "views" or "owner" while inside that element

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        classes = set((attributes.get("class") or "").split())
        if "tgme_channel_history" in classes:
            self.history = True
        if "tme_messages_more" in classes and attributes.get("data-before"):
            self.before = attributes["data-before"]
        if tag == "div":
            self._depth += 1
            if "tgme_widget_message" in classes and attributes.get("data-post"):
                self.posts.append({"data_post": attributes["data-post"], "text": [], "views": None})
                self._post_depth = self._depth
            elif "tgme_widget_message_text" in classes and self._post_depth is not None and self._text_depth is None:
                self._text_depth = self._depth
        if self._post_depth is None:
            return
        post = self.posts[-1]
        if tag == "time" and attributes.get("datetime"):
            post.setdefault("datetime", attributes["datetime"])
        elif tag == "a" and "tgme_widget_message_date" in classes:
            post.setdefault("href", attributes.get("href"))
        elif tag == "span" and "tgme_widget_message_views" in classes:
            self._capture = "views"
        elif tag == "a" and "tgme_widget_message_owner_name" in classes:
            self._capture = "owner"
        elif self._text_depth is not None and tag in _BLOCKS:
            post["text"].append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("span", "a"):
            self._capture = None
        if tag != "div":
            return
        if self._text_depth == self._depth:
            self._text_depth = None
        if self._post_depth == self._depth:
            self._post_depth = None
        self._depth -= 1

    def handle_data(self, data: str) -> None:
        if self._post_depth is None:
            return
        post = self.posts[-1]
        if self._capture == "views":
            post["views"] = (post["views"] or "") + data
        elif self._capture == "owner":
            post["owner"] = (post.get("owner") or "") + data
        elif self._text_depth is not None:
            post["text"].append(data)


class Telegram(Arena):
    format = "telegram"
    accept = "text/html"
    max_pages = 10  # about 200 posts a cycle

    def endpoint(self, url: str, params: ArenaParams) -> str:
        path = httpx.URL(url).path
        if not re.fullmatch(r"/s/[A-Za-z0-9_]{3,64}/?", path):
            raise ValueError("must be a channel's web preview, https://t.me/s/<channel>")
        return super().endpoint(url, params)

    def page_url(self, url: str, cursor: str | None) -> str:
        return with_query(url, {"before": cursor}) if cursor else url

    def parse(self, body: bytes, url: str) -> Page:
        preview = _Preview()
        preview.feed(body.decode("utf-8", "replace"))
        preview.close()
        if not preview.history:
            raise MalformedPage("not a channel preview (no tgme_channel_history)")
        rows = [_row(post) for post in preview.posts]
        return Page(rows, preview.before)


def _row(post: dict[str, Any]) -> dict[str, Any]:
    channel, _, number = post["data_post"].partition("/")
    if not number.isdigit() or not post.get("datetime"):
        raise MalformedPage(f"post {post['data_post']!r} without a number or a time")
    try:
        published = parse_timestamp(post["datetime"])
    except (ValueError, OverflowError) as error:
        raise MalformedPage(f"post {post['data_post']}: {error}") from None
    text = re.sub(r"[ \t]*\n\s*", "\n", "".join(post["text"])).strip()
    return {
        "external_id": post["data_post"],
        "url": post.get("href") or f"https://t.me/{channel}/{number}",
        "text": text or None,
        "author": (post.get("owner") or "").strip() or channel,
        "author_handle": channel,
        "published_at": published.isoformat() if published else None,
        "platform": "telegram",
        "content_type": "post",
        "views": views(post["views"]),
        "view_counter": (post["views"] or "").strip() or None,
    }
