"""GDELT: the DOC 2.0 API (``https://api.gdeltproject.org/api/v2/doc/doc``) in ``ArtList`` mode, JSON.

One request per cycle covers one window (``timespan``, e.g. ``1h``, newest first with
``sort=DateDesc``, at most 250 articles); GDELT asks for at most one request every 5 seconds, so
requests to its host are spaced 5 s apart across the process. The answer is ``{"articles": [{"url",
"url_mobile", "title", "seendate": "YYYYMMDDTHHMMSSZ", "socialimage", "domain", "language",
"sourcecountry"}]}``, or ``{}`` when nothing matched; a query GDELT refuses is answered with a line of
plain text (a malformed page, its text the reason). Each article's ``domain`` is its outlet: an
``aggregator: true`` GDELT source attributes articles to their outlets.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar, Literal

from pydantic import Field

from observatory_assets.defs.collection.arenas.base import Arena, ArenaParams, MalformedPage, Page, json_body
from observatory_assets.lib.text import collapse_whitespace


class GdeltParams(ArenaParams):
    """The DOC API's query (with its operators, e.g. ``sourcelang:danish``), window and size."""

    query: str = Field(min_length=1)
    timespan: str = Field(default="1h", pattern=r"^\d{1,4}(min|h|d|w|m)$")
    maxrecords: int = Field(default=250, ge=1, le=250)
    sort: Literal["DateDesc"] = "DateDesc"
    mode: Literal["ArtList"] = "ArtList"
    format: Literal["json"] = "json"


class Gdelt(Arena):
    format = "gdelt"
    params: ClassVar[type[ArenaParams]] = GdeltParams
    max_pages = 1  # one window per request; the next cycle's window starts where this one's mark is
    min_spacing_s = 5.0

    def endpoint(self, url: str, params: ArenaParams) -> str:
        if not url.rstrip("/").endswith("/api/v2/doc/doc"):
            raise ValueError("must be the DOC 2.0 endpoint, https://api.gdeltproject.org/api/v2/doc/doc")
        return super().endpoint(url, params)

    def page_url(self, url: str, cursor: str | None) -> str:
        return url

    def parse(self, body: bytes, url: str) -> Page:
        stripped = body.strip()
        if not stripped.startswith(b"{"):
            raise MalformedPage(collapse_whitespace(stripped[:200].decode("utf-8", "replace")) or "an empty answer")
        answer = json_body(stripped, "answer")
        articles = answer.get("articles", [])
        if not isinstance(articles, list):
            raise MalformedPage("articles is not a list")
        return Page([_row(article) for article in articles])


def _row(article: Any) -> dict[str, Any]:
    if not isinstance(article, dict) or not article.get("url") or not article.get("seendate"):
        raise MalformedPage("an article without url or seendate")
    try:
        seen = datetime.strptime(article["seendate"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except (TypeError, ValueError):
        raise MalformedPage(f"seendate {str(article['seendate'])[:40]!r} is not YYYYMMDDTHHMMSSZ") from None
    return {
        "external_id": article["url"],
        "url": article["url"],
        "title": article.get("title"),
        "published_at": seen.isoformat(),
        "platform": "gdelt",
        "content_type": "article",
        "source": article.get("domain") or None,
        "language_name": article.get("language"),
        "sourcecountry": article.get("sourcecountry"),
        "socialimage": article.get("socialimage") or None,
    }
