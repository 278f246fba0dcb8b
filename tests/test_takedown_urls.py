"""A takedown by URL finds the items whatever spelling of the address the request uses, through an index."""

import json

import pytest
from sqlalchemy import text

from observatory_assets.defs.ingestion.collect import SourceRequest, collect
from observatory_assets.defs.ingestion.loading import ingest_collection_run
from observatory_assets.defs.publishing.takedowns import _RESOLVE, request_takedown
from tests.support.helpers import write


def _ingest_urls(engine, store, tmp_path, urls: dict[str, str]) -> dict[str, int]:
    rows = [{"id": key, "title": f"Story {key}", "url": url, "published_at": "2026-11-10T08:00:00Z"}
            for key, url in urls.items()]  # fmt: skip
    path = write(tmp_path / "links.jsonl", "\n".join(json.dumps(row) for row in rows) + "\n")
    ingest_collection_run(engine, store, collect(engine, store, [SourceRequest("links", "jsonl", path=str(path))]))
    with engine.connect() as conn:
        return dict(conn.execute(text("SELECT external_id, id FROM raw_items")).all())


@pytest.mark.parametrize(
    "requested",
    [
        "https://News.Example.COM/story?id=7&utm_source=newsletter&utm_medium=email",
        "HTTPS://news.example.com:443/story?fbclid=abc&id=7#comments",
        "  https://news.example.com/story?id=7  ",
    ],
)
def test_a_url_takedown_matches_the_canonical_url_ingestion_stored(engine, store, tmp_path, requested):
    ids = _ingest_urls(
        engine, store, tmp_path,
        {"a": "https://news.example.com/story?utm_campaign=x&id=7", "b": "https://news.example.com/other"},
    )  # fmt: skip
    request_id = request_takedown(engine, "url", requested, "court order", "legal")
    with engine.connect() as conn:
        withdrawn = conn.execute(
            text("SELECT item_id FROM takedown_items WHERE request_id = :r"), {"r": request_id}
        ).scalars()
        subject = conn.execute(text("SELECT subject FROM takedown_requests WHERE id = :r"), {"r": request_id}).scalar()
        assert list(withdrawn) == [ids["a"]]
    assert subject == "https://news.example.com/story?id=7"


def test_a_url_takedown_refuses_what_is_not_an_http_url(engine):
    with pytest.raises(ValueError, match="takes an http"):
        request_takedown(engine, "url", "mailto:someone@example.com", "court order", "legal")


def test_the_url_lookup_goes_through_an_index_on_every_partition(engine, store, tmp_path):
    _ingest_urls(engine, store, tmp_path, {"a": "https://news.example.com/a"})
    with engine.begin() as conn:
        conn.execute(text("SET LOCAL enable_seqscan = off"))
        plan = "\n".join(
            conn.execute(text(f"EXPLAIN {_RESOLVE['url']}"), {"subject": "https://news.example.com/a"}).scalars()
        )
    scans = [line for line in plan.splitlines() if "Scan" in line and " on raw_items" in line]
    url_lookups = [line for line in plan.splitlines() if "Index Cond: (url = " in line]
    assert len(scans) >= 2 and len(url_lookups) == len(scans) and "Seq Scan" not in plan, plan
