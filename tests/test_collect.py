"""Collection runs: from a feed URL, from files, through the Dagster job; payloads kept byte for byte."""

import functools
import http.server
import threading

import dagster as dg
import pytest
from sqlalchemy import text

from observatory_assets.defs.ingestion.collect import SourceRequest, collect, guess_format
from observatory_assets.defs.ingestion.jobs import collect_job
from observatory_assets.defs.ingestion.loading import ingest_collection_run
from tests.support.helpers import write

FEED = ('<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>Lokal</title>'
        "<item><guid>u1</guid><title>Byrådet vedtager budget</title><link>https://lokal.example/1</link>"
        "<description>&lt;p&gt;Aarhus &lt;b&gt;Byråd&lt;/b&gt;&lt;/p&gt;</description>"
        "<pubDate>Tue, 10 Nov 2026 08:00:00 +0100</pubDate></item>"
        "<item><guid>u2</guid><title>Togstrejke i Odense</title><pubDate>Wed, 11 Nov 2026 09:30:00 GMT</pubDate></item>"
        "</channel></rss>")  # fmt: skip


@pytest.fixture
def feed_url(tmp_path, monkeypatch):
    monkeypatch.setenv("OBSERVATORY_ALLOW_PRIVATE_NETWORKS", "1")  # the feed is served on loopback
    write(tmp_path / "www" / "feed.xml", FEED)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path / "www"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/feed.xml"
    server.shutdown()
    server.server_close()  # its listening socket


def test_collect_a_feed_from_a_url_and_ingest_it(engine, store, feed_url):
    run_id = collect(engine, store, [SourceRequest("lokal", "rss", url=feed_url)])
    with engine.connect() as conn:
        run = conn.execute(
            text("SELECT status, items_collected, payloads FROM collection_runs WHERE id = :id"), {"id": run_id}
        ).one()
    assert (run.status, run.items_collected) == ("completed", 2)
    with store.open(run.payloads[0]["key"]) as stream:
        assert stream.read() == FEED.encode()
    result = ingest_collection_run(engine, store, run_id)
    assert result.loaded == 2
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT title, text, url, published_at FROM raw_items ORDER BY record_no")).all()
    assert rows[0].text == "Aarhus Byråd" and rows[0].url == "https://lokal.example/1"
    assert rows[0].published_at.isoformat() == "2026-11-10T07:00:00+00:00"


def test_only_http_urls_are_fetched(engine, store):
    with pytest.raises(ValueError, match="http"):
        collect(engine, store, [SourceRequest("x", "rss", url="file:///etc/passwd")])
    with engine.connect() as conn:
        assert conn.execute(text("SELECT status, error FROM collection_runs")).one().status == "failed"


@pytest.mark.parametrize(
    ("location", "fmt"),
    [
        ("a/b.jsonl", "jsonl"),
        ("x.NDJSON", "jsonl"),
        ("export.csv", "csv"),
        ("f.atom", "atom"),
        ("https://x/rss?x=1", "rss"),
    ],
)
def test_guess_format(location, fmt):
    assert guess_format(location) == fmt


def test_source_request_is_validated():
    with pytest.raises(ValueError):
        SourceRequest("s", "xml", path="p")
    with pytest.raises(ValueError):
        SourceRequest("s", "rss")
    with pytest.raises(ValueError):
        SourceRequest(" ", "rss", path="p")


def test_collect_job_with_run_config_creates_a_completed_run_and_its_partition(engine, resources, tmp_path):
    path = write(tmp_path / "f.csv", "id,title,published_at\n1,Første,2026-11-01\n2,Anden,2026-11-02\n")
    with dg.DagsterInstance.ephemeral() as instance:
        result = collect_job.execute_in_process(
            run_config={"ops": {"collect_source": {"config": {"source": "csv-source", "path": str(path)}}}},
            resources=resources,
            instance=instance,
        )
        assert result.success
        run_id = result.output_for_node("collect_source")
        assert instance.get_dynamic_partitions("collection_runs") == [str(run_id)]
    with engine.connect() as conn:
        assert conn.execute(
            text("SELECT status, items_collected FROM collection_runs WHERE id = :id"), {"id": run_id}
        ).one() == ("completed", 2)
        assert conn.execute(text("SELECT type FROM sources WHERE name = 'csv-source'")).scalar() == "csv"
