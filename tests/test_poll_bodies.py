"""A poll cycle stores a changed body as served, whether it is small enough to be kept in memory or larger
(through a temporary file), and counts its records as ingestion will read them."""

from __future__ import annotations

import hashlib
import json

from sqlalchemy import text

from observatory_assets.defs.collection.fetcher import IN_MEMORY_BODY
from observatory_assets.defs.collection.polling import run_cycle
from observatory_assets.lib.feed_server import Document
from tests.support.helpers import catalog, sync


def rss(items: int, padding: int) -> bytes:
    entries = "".join(
        f"<item><guid>g-{n}</guid><title>{n}</title><description>{'x' * padding}</description></item>"
        for n in range(items)
    )
    return f'<?xml version="1.0"?><rss version="2.0"><channel><title>T</title>{entries}</channel></rss>'.encode()


def test_small_and_large_bodies_are_stored_as_served_and_counted(engine, store, server, client, tmp_path):
    small, large = rss(3, 100), rss(700, 1000)
    assert len(small) < IN_MEMORY_BODY < len(large)
    server.documents["/small"] = Document(small)
    server.documents["/large"] = Document(large)
    sources = [{"name": name, "url": server.url(f"/{name}"), "format": "rss"} for name in ("small", "large")]
    sync(engine, catalog(tmp_path, sources))

    report = run_cycle(engine, store, client, per_host=2)

    assert report.changed == 2 and report.items_collected == 3 + 700
    with engine.connect() as conn:
        payloads = conn.execute(text("SELECT payloads FROM collection_runs")).scalar_one()
    by_name = {payload["name"]: payload for payload in (json.loads(p) if isinstance(p, str) else p for p in payloads)}
    for name, body in (("small", small), ("large", large)):
        with store.open(by_name[name]["key"]) as stored:
            assert stored.read() == body
        assert by_name[name]["sha256"] == hashlib.sha256(body).hexdigest()
    assert by_name["small"]["records"] == 3 and by_name["large"]["records"] == 700
