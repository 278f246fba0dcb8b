"""Actors as code: the catalog validates and syncs idempotently; items link to actors by presence, then by
name or alias, mentions apart; editing the catalog relinks only what changed; volumes and the actor network
are computed from the archive."""

from __future__ import annotations

import json
from datetime import date

import pytest
from sqlalchemy import text

from observatory_assets.defs.actors.analysis import (
    build_actor_network,
    compute_volume_stats,
    network_metrics,
    store_network_metrics,
    top_actors_per_community,
    volume_rows,
)
from observatory_assets.defs.actors.catalog import (
    ActorCatalogError,
    actor_rows,
    load_actor_catalog,
    sync_actor_catalog,
)
from observatory_assets.defs.actors.linking import link_items
from observatory_assets.defs.ingestion.collect import SourceRequest, collect
from observatory_assets.defs.ingestion.loading import ingest_collection_run
from observatory_assets.lib.pseudonyms import author_pseudonym
from tests.support.helpers import write

KEY = b"a test key that is long enough"

CATALOG = """
actors:
  - name: Mette Frederiksen
    kind: person
    public_figure: true
    aliases: [Statsministeren]
    presences:
      - {platform: bluesky, handle: mette.bsky.social}
  - name: Danish Red Cross
    kind: organisation
    aliases: [Røde Kors]
lists:
  - name: leaders
    title: Leaders
    members: [Mette Frederiksen]
"""


def _catalog(tmp_path, body: str = CATALOG):
    write(tmp_path / "sources" / "actors" / "actors.yaml", body)
    return load_actor_catalog(tmp_path / "sources")


def _posts(engine, store, tmp_path, rows: list[dict], name: str = "posts") -> int:
    """One ingested collection run of Bluesky-shaped rows, pseudonymised as the loader stores them."""
    path = write(tmp_path / f"{name}.jsonl", "\n".join(json.dumps(row, ensure_ascii=False) for row in rows) + "\n")
    run_id = collect(engine, store, [SourceRequest("bsky", "jsonl", path=str(path))])
    ingest_collection_run(engine, store, run_id)
    with engine.begin() as conn:
        for row in rows:
            conn.execute(
                text("UPDATE raw_items SET platform = 'bluesky', author_pseudonym = :p WHERE external_id = :id"),
                {"p": author_pseudonym(KEY, "bluesky", row.get("author_handle") or row.get("author")), "id": row["id"]},
            )
    return run_id


ROWS = [
    {"id": "p1", "title": "Tale i Folketinget", "text": "Statsministeren taler", "author": "Mette F",
     "author_handle": "mette.bsky.social", "published_at": "2026-12-01T10:00:00Z"},
    {"id": "p2", "title": "Indsamling", "text": "Røde Kors samler ind efter stormen", "author": "Danish Red Cross",
     "published_at": "2026-12-01T11:00:00Z"},
    {"id": "p3", "title": "Kommentar", "text": "Jeg er enig med Mette Frederiksen og Røde Kors", "author": "anna",
     "author_handle": "anna.bsky.social", "published_at": "2026-12-01T12:00:00Z"},
]  # fmt: skip


@pytest.mark.parametrize(
    "body, message",
    [
        ("actors:\n  - {name: X, kind: robot}\n", "actors.yaml: field actors.X.kind"),
        ("actors:\n  - {name: X, kind: person, presences: [{platform: bluesky, handle: 'a b'}]}\n",
         "field actors.X.presences.0.handle"),
        ("lists:\n  - {name: l, members: [Nobody]}\n", "field lists.l.members: unknown actor 'Nobody'"),
        ("actors:\n  - {name: A, kind: person, presences: [{platform: bluesky, handle: h}]}\n"
         "  - {name: B, kind: person, presences: [{platform: bluesky, handle: H}]}\n", "already belongs to 'A'"),
        ("actors: [1, 2\n", "actors.yaml: not valid YAML"),
    ],
)  # fmt: skip
def test_a_bad_actor_file_is_one_line_naming_file_and_field(tmp_path, body, message):
    with pytest.raises(ActorCatalogError) as raised:
        _catalog(tmp_path, body)
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_sync_is_idempotent_and_reports_only_changed_actors(engine, tmp_path):
    catalog = _catalog(tmp_path)
    with engine.begin() as conn:
        first = sync_actor_catalog(conn, catalog)
        again = sync_actor_catalog(conn, catalog)
        rows = {row.name: row for row in actor_rows(conn)}
    assert (first.actors, first.lists, len(first.changed)) == (2, 1, 2)
    assert again.changed == [] and again.removed == []
    assert rows["Mette Frederiksen"].presences == [{"platform": "bluesky", "handle": "mette.bsky.social", "url": None}]
    assert rows["Mette Frederiksen"].lists == ["leaders"] and rows["Danish Red Cross"].aliases == ["Røde Kors"]

    edited = _catalog(tmp_path, CATALOG.replace("aliases: [Røde Kors]", "aliases: [Røde Kors, DRK]"))
    with engine.begin() as conn:
        changed = sync_actor_catalog(conn, edited)
        red_cross = conn.execute(text("SELECT id FROM actors WHERE name = 'Danish Red Cross'")).scalar()
    assert changed.changed == [red_cross]


def test_an_empty_home_has_no_actors(engine, tmp_path):
    catalog = load_actor_catalog(tmp_path / "nowhere")
    with engine.begin() as conn:
        assert sync_actor_catalog(conn, catalog).actors == 0
        assert link_items(conn, KEY).authors == 0 and actor_rows(conn) == []


def test_items_link_by_presence_then_alias_and_mentions_stay_apart(engine, store, tmp_path):
    with engine.begin() as conn:
        sync_actor_catalog(conn, _catalog(tmp_path))
    run_id = _posts(engine, store, tmp_path, ROWS)
    with engine.begin() as conn:
        counts = link_items(conn, KEY, run_id=run_id)
        links = set(
            conn.execute(
                text("""SELECT r.external_id, a.name, ia.role, ia.method FROM item_actors ia
                        JOIN raw_items r ON r.id = ia.item_id JOIN actors a ON a.id = ia.actor_id""")
            ).all()
        )
        again = link_items(conn, KEY, run_id=run_id)
        relinked = conn.execute(text("SELECT count(*) FROM item_actors")).scalar()
    assert links == {
        ("p1", "Mette Frederiksen", "author", "presence"),
        ("p2", "Danish Red Cross", "author", "name"),  # no handle: its pseudonym is of the name
        ("p3", "Mette Frederiksen", "mention", "name"),
        ("p3", "Danish Red Cross", "mention", "alias"),
    }
    assert (counts.authors, counts.mentions) == (2, 2) and (again.authors, again.mentions) == (2, 2)
    assert relinked == 4


def test_editing_the_catalog_relinks_what_changed(engine, store, tmp_path):
    with engine.begin() as conn:
        sync_actor_catalog(conn, _catalog(tmp_path))
    _posts(engine, store, tmp_path, ROWS)
    with engine.begin() as conn:
        link_items(conn, KEY)
        anna = CATALOG + "  - {name: Anna, kind: person, presences: [{platform: bluesky, handle: anna.bsky.social}]}\n"
        anna = anna.replace("lists:", "").replace(
            "  - name: leaders\n    title: Leaders\n    members: [Mette Frederiksen]\n", ""
        )
        synced = sync_actor_catalog(conn, _catalog(tmp_path, anna.replace("actors:\n", "actors:\n", 1)))
        link_items(conn, KEY, actor_ids=synced.changed)
        authors = dict(
            conn.execute(
                text("""SELECT r.external_id, a.name FROM item_actors ia JOIN raw_items r ON r.id = ia.item_id
                        JOIN actors a ON a.id = ia.actor_id WHERE ia.role = 'author'""")
            ).all()
        )
    assert authors == {"p1": "Mette Frederiksen", "p2": "Danish Red Cross", "p3": "Anna"}


def test_volume_stats_count_a_day_along_every_dimension(engine, store, tmp_path):
    with engine.begin() as conn:
        sync_actor_catalog(conn, _catalog(tmp_path))
    _posts(engine, store, tmp_path, ROWS)
    with engine.begin() as conn:
        link_items(conn, KEY)
        written = compute_volume_stats(conn, date(2026, 12, 1))
        assert compute_volume_stats(conn, date(2026, 12, 1)) == written  # idempotent
        platforms = {(r.value, r.items) for r in volume_rows(conn, None, "platform")}
        actors = {(r.value, r.items) for r in volume_rows(conn, None, "actor")}
        sources = {(r.value, r.items) for r in volume_rows(conn, None, "source")}
    assert platforms == {("bluesky", 3)} and sources == {("bsky", 3)}
    assert actors == {("Mette Frederiksen", 2), ("Danish Red Cross", 2)}  # authored or mentioned
    with pytest.raises(ValueError, match="unknown dimension"):
        volume_rows(engine.connect(), None, "colour")


def test_the_actor_network_joins_authors_to_what_they_mention(engine, store, tmp_path):
    with engine.begin() as conn:
        sync_actor_catalog(conn, _catalog(tmp_path))
    _posts(engine, store, tmp_path, ROWS)
    with engine.begin() as conn:
        link_items(conn, KEY)
        graph = build_actor_network(conn)
        metrics = network_metrics(graph)
        stored = store_network_metrics(conn, graph, metrics)
        table = top_actors_per_community(conn)
    anna = author_pseudonym(KEY, "bluesky", "anna.bsky.social")
    assert set(graph.nodes) == {"actor:Mette Frederiksen", "actor:Danish Red Cross", anna}
    assert set(graph.edges(anna)) == {(anna, "actor:Mette Frederiksen"), (anna, "actor:Danish Red Cross")}
    assert metrics[anna]["degree"] == 2 and metrics[anna]["betweenness"] == pytest.approx(1.0)
    assert stored == 3 and {row["label"] for row in table} >= {"Mette Frederiksen", anna}
    assert "anna" not in json.dumps(table)


def test_the_pseudonym_key_is_required_in_production_and_generated_for_the_embedded_demo(tmp_path):
    from resources.embedded import PseudonymKeyMissing, author_pseudonym_key
    from resources.settings import platform_settings

    production = platform_settings({"OBSERVATORY_DATABASE_URL": "postgresql://u:p@db/observatory"})
    with pytest.raises(PseudonymKeyMissing, match="OBSERVATORY_PSEUDONYM_KEY is not set"):
        author_pseudonym_key(production)
    short = platform_settings({"OBSERVATORY_DATABASE_URL": "postgresql://db/o", "OBSERVATORY_PSEUDONYM_KEY": "short"})
    with pytest.raises(PseudonymKeyMissing, match="too short"):
        author_pseudonym_key(short)
    embedded = platform_settings({"OBSERVATORY_HOME": str(tmp_path)})
    key = author_pseudonym_key(embedded)
    assert author_pseudonym_key(embedded) == key and len(key) >= 32
    assert (tmp_path / "pseudonym.key").stat().st_mode & 0o777 == 0o600
