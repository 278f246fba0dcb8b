"""Outlets per row: an aggregator's rows are attributed to the outlet each row names, registered on
first sight with the default credibility; ``--source`` stays the run's default and the payload's origin."""

import json

from sqlalchemy import text

from observatory_assets.defs.ingestion.collect import SourceRequest, collect
from observatory_assets.defs.ingestion.loading import ingest_collection_run
from tests.conftest import write
from tests.test_ingest import snapshot

SOURCES = "SELECT name, type, credibility FROM sources"
ITEMS = "SELECT r.external_id, s.name FROM raw_items r JOIN sources s ON s.id = r.source_id"


def _ingest(engine, store, path, fmt, source="aggregator"):
    run_id = collect(engine, store, [SourceRequest(source, fmt, path=str(path))])
    result = ingest_collection_run(engine, store, run_id)
    assert result.accounted_for
    return run_id, result


def _rows(engine, query: str) -> set[tuple]:
    with engine.connect() as conn:
        return set(map(tuple, conn.execute(text(query)).all()))


def _tables(engine) -> dict:
    return {**snapshot(engine), "sources": sorted(_rows(engine, SOURCES))}


MIXED = [
    {"id": "1", "title": "Wall Street rallies", "source": "24/7 Wall St.", "published_at": "2026-11-10T08:00:00Z"},
    {"id": "1", "title": "Budget passes", "publisher": "Reuters", "published_at": "2026-11-10T09:00:00Z"},
    {"id": "2", "title": "Storm warning", "source": {"id": None, "name": "Reuters"}, "published_at": "2026-11-10"},
    {"id": "1", "title": "Election called", "site": "  BBC   News ", "published_at": "2026-11-10T10:00:00Z"},
    {"id": "1", "title": "Election called again", "outlet": "BBC News", "published_at": "2026-11-10T11:00:00Z"},
    {"id": "9", "title": "No outlet named", "published_at": "2026-11-10T12:00:00Z"},
    {"id": "8", "title": "Not a name", "source": ["a", "list"], "published_at": "2026-11-10T12:00:00Z"},
    {"id": "7", "title": "Too long a name", "source": "x" * 201, "published_at": "2026-11-10T12:00:00Z"},
]


def test_a_jsonl_mixing_three_outlets_is_attributed_row_by_row(engine, store, tmp_path):
    path = write(tmp_path / "mixed.jsonl", "\n".join(json.dumps(row) for row in MIXED))
    run_id, result = _ingest(engine, store, path, "jsonl")
    # external id "1" is a different item at each outlet, but the second "1" at BBC News repeats the first
    assert _rows(engine, ITEMS) == {
        ("1", "24/7 Wall St."), ("1", "Reuters"), ("2", "Reuters"), ("1", "BBC News"),
        ("9", "aggregator"), ("8", "aggregator"), ("7", "aggregator"),
    }  # fmt: skip
    assert (result.loaded, result.duplicates, result.rejected) == (7, 1, 0)
    assert result.by_source == {
        "24/7 Wall St.": {"loaded": 1, "duplicates": 0, "rejected": 0},
        "BBC News": {"loaded": 1, "duplicates": 1, "rejected": 0},
        "Reuters": {"loaded": 2, "duplicates": 0, "rejected": 0},
        "aggregator": {"loaded": 3, "duplicates": 0, "rejected": 0},
    }
    assert _rows(engine, SOURCES) == {
        ("aggregator", "jsonl", 0.5), ("24/7 Wall St.", "jsonl", 0.5),
        ("Reuters", "jsonl", 0.5), ("BBC News", "jsonl", 0.5),
    }  # fmt: skip
    with engine.connect() as conn:
        payload = conn.execute(text("SELECT payloads FROM collection_runs WHERE id = :r"), {"r": run_id}).scalar()
        duplicate = conn.execute(
            text("SELECT s.name, d.matched_on FROM item_duplicates d JOIN sources s ON s.id = d.source_id")
        ).one()
        metadata = dict(
            conn.execute(text("SELECT external_id, raw_metadata FROM raw_items WHERE record_no >= 6")).all()
        )
    assert [p["name"] for p in payload] == ["aggregator"]  # the payload's origin is the run's source
    assert tuple(duplicate) == ("BBC News", "source_external_id")
    assert "source" not in metadata["9"] and metadata["8"]["source"] == ["a", "list"]
    assert metadata["7"]["_normalized"] == ["outlet_name_too_long"] and len(metadata["7"]["source"]) == 201


def test_reingesting_an_attributed_run_gives_identical_tables(engine, store, tmp_path):
    path = write(tmp_path / "mixed.jsonl", "\n".join(json.dumps(row) for row in MIXED))
    run_id, _ = _ingest(engine, store, path, "jsonl")
    first = _tables(engine)
    assert ingest_collection_run(engine, store, run_id).skipped and _tables(engine) == first
    forced = ingest_collection_run(engine, store, run_id, force=True)
    assert forced.new_items == 0 and (forced.loaded, forced.duplicates) == (7, 1)
    assert _tables(engine) == first
    # the same rows in a second run of another aggregator repeat the items at their outlets
    again = collect(engine, store, [SourceRequest("other-aggregator", "jsonl", path=str(path))])
    result = ingest_collection_run(engine, store, again)
    assert (result.loaded, result.duplicates) == (0, 8)
    with engine.connect() as conn:
        matched = conn.execute(
            text("SELECT matched_on, count(*) FROM item_duplicates WHERE collection_run_id = :r GROUP BY 1"),
            {"r": again},
        ).all()
    # rows naming an outlet repeat its items by key; the others, now from another source, by content
    assert dict(matched) == {"source_external_id": 5, "content_hash": 3}


def test_a_4cat_export_is_attributed_to_the_outlets_of_its_items(engine, store, tmp_path):
    lines = [
        {"source_platform": "telegram", "timestamp_collected": 1762761600000,
         "item": {"id": f"m{n}", "body": f"Message {n} about the strike", "site": site, "createTime": 1762758000 + n}}
        for n, site in enumerate(["dr.dk", "tv2.dk", "dr.dk"])
    ]  # fmt: skip
    path = write(tmp_path / "export.ndjson", "\n".join(json.dumps(line) for line in lines))
    _, result = _ingest(engine, store, path, "jsonl", source="4cat")
    assert result.loaded == 3
    assert _rows(engine, ITEMS) == {("m0", "dr.dk"), ("m1", "tv2.dk"), ("m2", "dr.dk")}
    assert _rows(engine, "SELECT raw_metadata->>'platform' FROM raw_items") == {("telegram",)}


def test_a_csv_with_a_publisher_column(engine, store, tmp_path):
    content = (
        "id,title,publisher,published_at\n"
        "1,Første,Politiken,2026-11-01\n"
        "2,Anden,Berlingske,2026-11-02\n"
        "3,Tredje,,2026-11-03\n"
    )
    _, result = _ingest(engine, store, write(tmp_path / "f.csv", content), "csv", source="infomedia")
    assert result.loaded == 3
    assert _rows(engine, ITEMS) == {("1", "Politiken"), ("2", "Berlingske"), ("3", "infomedia")}
    assert ("Politiken", "csv", 0.5) in _rows(engine, SOURCES)


def test_an_rss_entry_with_a_source_element(engine, store, tmp_path):
    feed = (
        '<?xml version="1.0"?><rss version="2.0"><channel><title>News aggregator</title>'
        '<item><guid>a</guid><title>From Reuters</title><source url="https://reuters.example/rss">Reuters</source>'
        "<pubDate>Tue, 10 Nov 2026 08:00:00 GMT</pubDate></item>"
        "<item><guid>b</guid><title>Own story</title><pubDate>Tue, 10 Nov 2026 09:00:00 GMT</pubDate></item>"
        "</channel></rss>"
    )
    _, result = _ingest(engine, store, write(tmp_path / "feed.xml", feed), "rss", source="news-agg")
    assert result.loaded == 2
    assert _rows(engine, ITEMS) == {("a", "Reuters"), ("b", "news-agg")}
    assert ("Reuters", "rss", 0.5) in _rows(engine, SOURCES)
