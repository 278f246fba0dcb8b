"""A catalog and a polling state that cannot poison the loop: every URL validated at sync, a bad stored URL or
a non-ASCII validator failing only its own source, a design removed from the catalog no longer polled for nor
charged, and a re-sync that keeps what the sources' answers decided (a 301's new URL, a 410's deactivation).
Against real loopback feeds and a real Postgres."""

from __future__ import annotations

import subprocess

import pytest
from sqlalchemy import text

from observatory_assets.defs.collection.catalog import (
    CatalogError,
    design_states,
    load_catalog,
)
from observatory_assets.defs.collection.polling import run_cycle
from observatory_assets.lib.feed_server import Document, Reply
from tests.support.helpers import ROOT, catalog, source_state, sync

FEED = (
    b'<?xml version="1.0"?><rss version="2.0"><channel><title>T</title>'
    b"<item><guid>x-1</guid><title>Folketinget</title><pubDate>Wed, 02 Dec 2026 10:00:00 GMT</pubDate></item>"
    b"</channel></rss>"
)


def due_again(engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("UPDATE sources SET next_check_at = now() - interval '1 second'"))


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://x.org:8443x/feed", "is not a valid URL (Port could not be cast to integer value as '8443x')"),
        ("http://x.org:70000/feed", "is not a valid URL (Port out of range 0-65535)"),
        ("http://x.org:0/feed", "must have a port from 1 to 65535"),
        ("http:///feed", "must name a host"),
        ("http://user:secret@x.org/feed", "must not carry credentials (user:password@)"),
        ("http://x.org/a feed", "must not contain whitespace"),
    ],
)
def test_sync_refuses_a_url_it_cannot_poll_naming_file_and_field(tmp_path, url, problem):
    with pytest.raises(CatalogError) as refused:
        load_catalog(catalog(tmp_path, [{"name": "a", "url": url, "format": "rss"}]))
    assert str(refused.value) == f"catalog.yaml: field sources.a.url: {problem}"


def test_the_cli_refuses_a_bad_port_in_one_line(dagster_env, tmp_path):
    directory = catalog(tmp_path, [{"name": "a", "url": "http://x.org:8443x/feed", "format": "rss"}])
    env = {**dagster_env, "OBSERVATORY_SOURCES_DIR": str(directory)}
    bad = subprocess.run(["observatory", "sources", "sync"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1, bad.stderr
    assert bad.stderr.startswith("observatory: catalog.yaml: field sources.a.url: is not a valid URL")


def test_a_stored_url_that_cannot_be_read_fails_its_source_alone(engine, store, server, client, tmp_path):
    server.documents["/good"] = Document(FEED)
    sync(engine, catalog(tmp_path, [{"name": "good", "url": server.url("/good"), "format": "rss"}]))
    with engine.begin() as conn:  # as a sync before URLs were validated left it
        conn.execute(
            text(
                "INSERT INTO sources (name, url, type, catalog_file, active) "
                "VALUES ('bad', 'http://x.org:8443x/feed', 'rss', 'catalog.yaml', true)"
            )
        )
    report = run_cycle(engine, store, client)
    assert (report.due, report.changed, report.errors) == (2, 1, 1)
    bad = source_state(engine, "bad")
    assert bad["error_count"] == 1 and bad["last_error"] and bad["next_check_at"]


def test_a_non_ascii_validator_is_never_stored_nor_sent(engine, store, server, client, tmp_path):
    server.routes["/feed"] = lambda _: Reply(
        200, headers={"ETag": '"caf\xe9"', "Last-Modified": "Mi, 02 Dez 2026 10:00:00 \xfcTC"}, body=FEED
    )
    sync(engine, catalog(tmp_path, [{"name": "feed", "url": server.url("/feed"), "format": "rss"}]))
    with engine.begin() as conn:  # as an older poller stored one: it is not sent back either
        conn.execute(text("UPDATE sources SET etag = '\"caf\u00e9\"'"))
    for _ in range(2):
        report = run_cycle(engine, store, client)
        assert (report.changed, report.errors) == (1, 0)
        polled = source_state(engine, "feed")
        assert (polled["etag"], polled["last_modified"], polled["error_count"]) == (None, None, 0)
        due_again(engine)
    sent = {name.lower() for _, headers in server.requests for name in headers}
    assert not sent & {"if-none-match", "if-modified-since"}


def test_a_design_removed_from_the_catalog_is_no_longer_polled_for_nor_charged(engine, store, server, client, tmp_path):
    server.documents["/a"] = Document(FEED)
    source = {"name": "a", "url": server.url("/a"), "format": "rss", "cost": {"per_request": 1}}
    sync(engine, catalog(tmp_path, [source], [{"name": "watch", "sources": ["a"], "budget": {"credits": 10}}]))
    assert set(run_cycle(engine, store, client).runs) == {"watch"}
    removed = sync(engine, catalog(tmp_path, [source]))
    with engine.connect() as conn:
        assert [(d["name"], d["sources"]) for d in design_states(conn)] == [("watch", [])]
    assert removed.designs_removed == ["watch"]
    due_again(engine)
    after = run_cycle(engine, store, client, force=True)
    assert after.requests_sent == 1 and "watch" not in after.runs  # the source is polled, free, for no design
    with engine.connect() as conn:
        reserved = conn.execute(text("SELECT count(*) FROM credit_transactions WHERE kind = 'reserve'")).scalar()
    assert reserved == 1  # the first cycle's hold only
    assert sync(engine, catalog(tmp_path, [source])).designs_removed == []  # idempotent


def test_a_resync_keeps_a_301_rewrite_and_a_410_deactivation_until_the_catalog_changes_the_url(
    engine, store, server, client, tmp_path
):
    server.routes["/old"] = lambda _: Reply(301, headers={"Location": server.url("/new")})
    server.documents["/new"] = Document(FEED)
    server.routes["/gone"] = lambda _: Reply(410)
    sources = [
        {"name": "moved", "url": server.url("/old"), "format": "rss"},
        {"name": "gone", "url": server.url("/gone"), "format": "rss"},
    ]
    sync(engine, catalog(tmp_path, sources))
    report = run_cycle(engine, store, client)
    assert (report.moved, report.gone) == (["moved"], ["gone"])
    sync(engine, catalog(tmp_path, sources))  # the same catalog again
    assert source_state(engine, "moved")["url"] == server.url("/new")
    assert source_state(engine, "gone")["active"] is False
    server.documents["/back"] = Document(FEED)
    changed = [{**sources[0], "url": server.url("/elsewhere")}, {**sources[1], "url": server.url("/back")}]
    sync(engine, catalog(tmp_path, changed))  # the catalog gives both another URL: they start over
    assert source_state(engine, "moved")["url"] == server.url("/elsewhere")
    back = source_state(engine, "gone")
    assert (back["active"], back["url"], back["last_status"]) == (True, server.url("/back"), None)
