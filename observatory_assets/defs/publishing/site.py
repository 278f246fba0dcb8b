"""The static site target: the digests as objects under ``site/`` in the object store.

- ``site/digests/<date>.html``: one self-contained page per live digest;
- ``site/index.html``: every live digest, newest first;
- ``site/feed.json`` (JSON Feed 1.1) and ``site/feed.atom`` (Atom 1.0, feedgen).

The pages are written when a digest is published; the index and feeds are rebuilt from
``publish_records`` (never from memory), so a digest withdrawn by a takedown leaves all four at once.
``site/manifest.json`` holds a fingerprint of what the index and feeds were built from: an unchanged
site is not rewritten. A feed entry's id is its record's id, which is never reused.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, date, datetime

from feedgen.feed import FeedGenerator
from sqlalchemy import Connection, text

from observatory_assets.defs.publishing.digest import SITE_TITLE, render_index, render_page
from observatory_assets.lib.statuses import PublishRecordStatus
from resources.object_store import ObjectStore, put_bytes

SITE_PREFIX = "site/"
INDEX_KEY, JSON_FEED_KEY, ATOM_FEED_KEY, MANIFEST_KEY = (
    "site/index.html", "site/feed.json", "site/feed.atom", "site/manifest.json",
)  # fmt: skip
DEFAULT_SITE_URL = "http://127.0.0.1:8765/"


def page_key(day: date) -> str:
    return f"{SITE_PREFIX}digests/{day.isoformat()}.html"


def feed_entry_id(record_id: int) -> str:
    """The permanent id of a digest in both feeds."""
    return f"urn:observatory:digest:{record_id}"


@dataclass(frozen=True)
class Placement:
    """Where a target put a digest: its id there and, when the target has one, a permanent link for
    people (a static page is an object whose link is signed when someone asks for it: :meth:`StaticTarget.link`)."""

    external_id: str
    url: str | None


_LIVE_RECORDS = """
SELECT {columns}
  FROM publish_records
 WHERE target = 'static' AND live AND status <> :removed
 ORDER BY digest_date DESC
"""
_FINGERPRINTED = "id, content_hash, updated_at"


class StaticTarget:
    """Publishes digests as static pages and feeds in the object store (local directory or S3)."""

    kind = "static"
    inline_charts = True

    def __init__(self, store: ObjectStore, site_url: str = DEFAULT_SITE_URL) -> None:
        self.store = store
        self.site_url = site_url if site_url.endswith("/") else site_url + "/"

    def put(
        self, external_id: str | None, day: date, title: str, fragment: str, content_hash: str, live: bool
    ) -> Placement:
        key = page_key(day)
        if live:
            put_bytes(self.store, key, render_page(title, fragment).encode("utf-8"), "text/html; charset=utf-8")
        else:
            self.store.delete(key)
        return Placement(key, None)

    def link(self, external_id: str, url: str | None) -> str:
        """A link to a published page, signed now (on S3 a pre-signed link expires, so none is ever stored)."""
        return self.store.download_url(external_id)

    def delete(self, external_id: str) -> bool:
        existed = self.store.size(external_id) is not None
        self.store.delete(external_id)
        return existed

    def finish(self, conn: Connection) -> bool:
        """Rebuild the index and both feeds if the live records changed; True if they were rewritten."""
        live = {"removed": PublishRecordStatus.REMOVED}
        fingerprinted = conn.execute(text(_LIVE_RECORDS.format(columns=_FINGERPRINTED)), live).all()
        fingerprint = hashlib.sha256(
            json.dumps([[r.id, r.content_hash, r.updated_at.isoformat()] for r in fingerprinted]).encode()
        ).hexdigest()
        if self.store.size(MANIFEST_KEY) is not None:
            with self.store.open(MANIFEST_KEY) as stream:
                if json.load(stream).get("fingerprint") == fingerprint and self._complete():
                    return False
        records = conn.execute(  # the pages' HTML is read only when the site is rebuilt
            text(_LIVE_RECORDS.format(columns=f"{_FINGERPRINTED}, digest_date, title, body_html, event_count, "
                                              "published_at")),
            live,
        ).all()  # fmt: skip
        for r in records:  # a page lost from the store comes back from its record
            if self.store.size(page_key(r.digest_date)) is None:
                put_bytes(self.store, page_key(r.digest_date), render_page(r.title, r.body_html).encode(), "text/html")
        entries = [
            {"href": f"digests/{r.digest_date.isoformat()}.html", "title": r.title, "event_count": r.event_count,
             "updated": f"{r.updated_at.astimezone(UTC):%Y-%m-%d %H:%M} UTC"}
            for r in records
        ]  # fmt: skip
        put_bytes(self.store, INDEX_KEY, render_index(entries).encode("utf-8"), "text/html; charset=utf-8")
        put_bytes(self.store, JSON_FEED_KEY, json_feed(records, self.site_url).encode("utf-8"), "application/feed+json")
        put_bytes(self.store, ATOM_FEED_KEY, atom_feed(records, self.site_url), "application/atom+xml")
        manifest = {"fingerprint": fingerprint, "digests": len(records), "built_at": datetime.now(UTC).isoformat()}
        put_bytes(self.store, MANIFEST_KEY, json.dumps(manifest).encode(), "application/json")
        return True

    def _complete(self) -> bool:
        return all(self.store.size(k) is not None for k in (INDEX_KEY, JSON_FEED_KEY, ATOM_FEED_KEY))

    def keys(self) -> dict[str, str]:
        """The object keys of the site's entry points (sign them with the store's ``download_url`` when read)."""
        return {"index": INDEX_KEY, "json_feed": JSON_FEED_KEY, "atom_feed": ATOM_FEED_KEY}


def json_feed(records, site_url: str) -> str:
    """JSON Feed 1.1 of the live digests, newest first."""
    feed = {
        "version": "https://jsonfeed.org/version/1.1",
        "title": f"{SITE_TITLE} digests",
        "home_page_url": site_url + "index.html",
        "feed_url": site_url + "feed.json",
        "language": "en",
        "items": [
            {
                "id": feed_entry_id(r.id),
                "url": f"{site_url}digests/{r.digest_date.isoformat()}.html",
                "title": r.title,
                "content_html": r.body_html,
                "date_published": r.published_at.astimezone(UTC).isoformat(),
                "date_modified": r.updated_at.astimezone(UTC).isoformat(),
            }
            for r in records
        ],
    }
    return json.dumps(feed, ensure_ascii=False, indent=1)


def atom_feed(records, site_url: str) -> bytes:
    """Atom 1.0 (RFC 4287) of the live digests, newest first."""
    fg = FeedGenerator()
    fg.id(site_url + "feed.atom")
    fg.title(f"{SITE_TITLE} digests")
    fg.author({"name": SITE_TITLE})
    fg.link(href=site_url + "index.html", rel="alternate")
    fg.link(href=site_url + "feed.atom", rel="self")
    fg.language("en")
    newest = max((r.updated_at for r in records), default=datetime(2000, 1, 1, tzinfo=UTC))
    fg.updated(newest.astimezone(UTC))
    for r in reversed(records):  # feedgen prepends: add oldest first so the feed reads newest first
        entry = fg.add_entry()
        entry.id(feed_entry_id(r.id))
        entry.title(r.title)
        entry.link(href=f"{site_url}digests/{r.digest_date.isoformat()}.html", rel="alternate")
        entry.published(r.published_at.astimezone(UTC))
        entry.updated(r.updated_at.astimezone(UTC))
        entry.content(r.body_html, type="html")
    return fg.atom_str(pretty=True)
