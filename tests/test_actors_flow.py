"""Who said it, end to end: a design follows an actor list, the public figure's own Bluesky feed is polled on
a loopback AppView, items link to actors, and a private author's name and handle are nowhere in the
database or the exports, while the public figure's are."""

from __future__ import annotations

import subprocess

import pytest
from sqlalchemy import text

from observatory_assets.cli.collection import sync_sources
from observatory_assets.defs.actors.analysis import build_actor_network, compute_volume_stats, volume_rows
from observatory_assets.defs.actors.linking import link_items
from observatory_assets.defs.collection.polling import run_cycle
from observatory_assets.defs.exports.delivery import export_content
from observatory_assets.defs.exports.filters import ExportFilters
from observatory_assets.defs.ingestion.loading import ingest_collection_run
from observatory_assets.defs.operations.backups import pg_tool
from resources.embedded import author_pseudonym_key
from tests.support.helpers import write
from tests.test_arenas import fixture, ok, replay

FEED = "/xrpc/app.bsky.feed.getAuthorFeed"
SEARCH = "/xrpc/app.bsky.feed.searchPosts"
ACTORS = """
actors:
  - name: Mette Frederiksen
    kind: person
    public_figure: true
    presences: [{platform: bluesky, handle: mette.bsky.social}]
lists:
  - {name: leaders, members: [Mette Frederiksen]}
"""


@pytest.fixture
def appview(server, monkeypatch):
    monkeypatch.setenv("OBSERVATORY_BLUESKY_APPVIEW", server.base_url)
    monkeypatch.setenv("OBSERVATORY_PSEUDONYM_KEY", "a-test-key-of-enough-length")
    return server


def _catalog(tmp_path, search_url: str):
    write(tmp_path / "sources" / "actors" / "people.yaml", ACTORS)
    write(
        tmp_path / "sources" / "catalog.yaml",
        f"""
sources:
  - {{name: bsky-klima, format: bluesky, url: '{search_url}', params: {{q: klimaloven}}}}
designs:
  - {{name: leaders-watch, sources: [bsky-klima], actor_lists: [leaders]}}
""",
    )
    return tmp_path / "sources"


def test_a_followed_actor_is_collected_linked_and_kept_in_clear_while_private_authors_are_not(
    engine, store, tmp_path, appview, client, database_url
):
    replay(appview, FEED, "cursor", {None: ok(fixture("bluesky/author_feed.json")),
                                     "2026-12-05T15:30:00.000Z": ok(b'{"feed": []}')})  # fmt: skip
    replay(appview, SEARCH, "cursor", {None: ok(fixture("bluesky/search_page1.json")),
                                       "25": ok(b'{"posts": []}')})  # fmt: skip
    directory = _catalog(tmp_path, appview.url(SEARCH))
    catalog, actors = sync_sources(engine, str(directory))
    assert catalog.sources == 2 and actors.actors == 1  # the followed feed became a source of the design

    report = run_cycle(engine, store, client, force=True)
    [run_id] = report.runs.values()
    ingest_collection_run(engine, store, run_id)
    assert any(path.startswith(FEED) and "actor=mette.bsky.social" in path for path, _ in appview.requests)

    with engine.begin() as conn:
        link_items(conn, author_pseudonym_key(), run_id=run_id)
        rows = conn.execute(
            text("SELECT author, author_handle, author_pseudonym, url FROM raw_items ORDER BY external_id")
        ).all()
        linked = conn.execute(
            text("""SELECT count(*) FROM item_actors ia JOIN actors a ON a.id = ia.actor_id
                    WHERE a.name = 'Mette Frederiksen' AND ia.role = 'author' AND ia.method = 'presence'""")
        ).scalar()
        first, last = conn.execute(text("SELECT min(published_at)::date, max(published_at)::date FROM raw_items")).one()
        compute_volume_stats(conn, first, last)
        by_actor = {r.value: 0 for r in volume_rows(conn, "leaders-watch", "actor")}
        for row in volume_rows(conn, "leaders-watch", "actor"):
            by_actor[row.value] += row.items
        graph = build_actor_network(conn)
    public = [r for r in rows if r.author_handle == "mette.bsky.social"]
    private = [r for r in rows if r.author_handle != "mette.bsky.social"]
    assert public and private and linked == len(public)
    assert all(r.author is None and r.author_handle is None and r.author_pseudonym for r in private)
    assert by_actor == {"Mette Frederiksen": len(public)} and "actor:Mette Frederiksen" in graph

    dump = subprocess.run(
        [_pg_dump(engine), "--data-only", database_url.replace("postgresql+psycopg://", "postgresql://")],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    for private_name in ("lars.bsky.social", "Lars"):
        assert private_name not in dump, f"{private_name!r} is stored"
    assert "mette.bsky.social" in dump

    [export] = export_content(engine, store, ExportFilters(), formats=["csv"], request_id="flow")
    with store.open(export.object_key) as exported:
        body = exported.read().decode("utf-8-sig")
    assert "mette.bsky.social" in body and "lars.bsky.social" not in body and "Lars" not in body


def _pg_dump(engine) -> str:
    with engine.connect() as conn:
        major = int(conn.execute(text("SHOW server_version_num")).scalar_one()) // 10000
    return pg_tool("pg_dump", major)
