"""Online event clustering on the real embedded Postgres: stories become events, re-runs change
nothing, batching (even out of publication order) does not matter, the time window splits a story
retold later, a new embedder rebuilds the events, and the asset checks catch what they should."""

import json
import random
from datetime import UTC, datetime, timedelta

import dagster as dg
from sqlalchemy import text

from observatory_assets.defs.enrichment.assets import item_embeddings, item_features
from observatory_assets.defs.enrichment.embeddings import embed_run
from observatory_assets.defs.enrichment.lexical import LexicalEmbedder
from observatory_assets.defs.enrichment.resources import EmbedderResource
from observatory_assets.defs.events.assets import (
    centroids_match_embedder,
    embedded_items_in_one_event,
    events,
    events_have_items,
)
from observatory_assets.defs.events.clustering import ClusteringParams, cluster_events, nearest_events
from observatory_assets.defs.events.integrity import check_centroids, check_events_have_items, check_items_in_one_event
from observatory_assets.lib.dagster import collection_run_partitions
from tests.support.helpers import ROOT, labelled_rows, labelled_space, load_rows

#: One fixed space for every database of this module, so that events of two databases are comparable.
EMBEDDER = LexicalEmbedder(labelled_space())
PARAMS = ClusteringParams(threshold=EMBEDDER.join_threshold)


def _ingest_and_embed(engine, store, tmp_path, rows, name="run") -> int:
    run_id = load_rows(engine, store, tmp_path, rows, name=name)
    embed_run(engine, EMBEDDER, run_id)
    return run_id


def _cluster(engine, params: ClusteringParams = PARAMS):
    return cluster_events(engine, EMBEDDER.name, EMBEDDER.dimensions, params)


def _events_by_items(engine) -> set[tuple]:
    """Each event as (its items' external ids, item count, source count, first/last seen, title, similarities)."""
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                """
                SELECT e.id, array_agg(r.external_id ORDER BY r.external_id) AS items, e.item_count, e.source_count,
                       e.first_seen_at, e.last_seen_at, e.title, array_agg(round(x.similarity::numeric, 4) ORDER BY r.external_id) AS sims
                  FROM events e JOIN event_items x ON x.event_id = e.id JOIN raw_items r ON r.id = x.item_id
                 GROUP BY e.id
                """
            )
        ).all()
    return {
        (tuple(r.items), r.item_count, r.source_count, r.first_seen_at, r.last_seen_at, r.title, tuple(r.sims))
        for r in rows
    }


def _all_checks_pass(engine) -> bool:
    found = {
        **check_events_have_items(engine),
        **check_items_in_one_event(engine, EMBEDDER.name),
        **check_centroids(engine, EMBEDDER.name, EMBEDDER.dimensions),
    }
    return not any(found.values())


def test_stories_become_events_and_a_rerun_changes_nothing(engine, store, tmp_path):
    rows = labelled_rows(60)
    _ingest_and_embed(engine, store, tmp_path, rows)
    result = _cluster(engine)
    stories = {row["key"]: row["story"] for row in rows}
    clusters = _events_by_items(engine)
    assert result.items_assigned == 60 and result.new_events - result.events_merged == len(clusters)
    assert len(clusters) < 2 * len(set(stories.values())) and result.joined_existing == 60 - result.new_events > 0
    # every event is (almost always) one story; the big stories are mostly kept together
    pure = sum(len({stories[i] for i in c[0]}) == 1 for c in clusters)
    assert pure >= len(clusters) - 1
    by_story = {}
    for c in clusters:
        for item in c[0]:
            by_story.setdefault(stories[item], set()).add(c[0])
    # a lexical space cannot join a Danish and an English telling sharing no name: half the stories stay whole
    assert sum(len(v) == 1 for v in by_story.values()) >= 0.5 * len(by_story)
    for items, count, sources, first, last, title, sims in clusters:
        members = [r for r in rows if r["key"] in items]
        assert count == len(items) and sources == len({r["source"] for r in members})
        assert title in {r["title"] for r in members} and first <= last
        assert all(-1.0 <= s <= 1.0 for s in sims) and 1.0 in sims  # the founder
    assert _all_checks_pass(engine)

    again = _cluster(engine)
    assert again.items_assigned == 0 and again.new_events == 0 and _events_by_items(engine) == clusters
    item_id = next(iter(dict(_memberships(engine))))
    nearest = nearest_events(engine, item_id, limit=3)
    assert nearest[0]["event"] == dict(_memberships(engine))[item_id] and nearest[0]["similarity"] > 0


def test_event_ids_are_taken_as_a_small_archive_needs_them(engine, store, tmp_path):
    rows = labelled_rows(60)
    _ingest_and_embed(engine, store, tmp_path, rows[:3], name="first")
    first = _cluster(engine)
    _ingest_and_embed(engine, store, tmp_path, rows[3:], name="second")
    second = _cluster(engine)
    with engine.connect() as conn:
        ids = conn.execute(text("SELECT id FROM events ORDER BY id")).scalars().all()
    assert 1 <= first.new_events <= 3 and max(ids[: first.new_events]) <= 8  # a cold start: one first block
    # each run's blocks double from eight: together they never take much more than twice what was used
    assert max(ids) <= 2 * (first.new_events + second.new_events) + 2 * 8


def _memberships(engine):
    with engine.connect() as conn:
        return conn.execute(text("SELECT item_id, event_id FROM event_items")).all()


def test_batching_and_arrival_order_do_not_change_the_events(pg_server, migrated_template, engine, store, tmp_path):
    from resources.postgres import engine_for
    from tests.conftest import create_database, drop_database

    rows = labelled_rows(120)
    _ingest_and_embed(engine, store, tmp_path, rows, name="all")
    _cluster(engine)
    one_run = _events_by_items(engine)

    batched_url = create_database(pg_server, "batched_events", template=migrated_template)
    try:
        batched = engine_for(batched_url)
        shuffled = rows[:]
        random.Random(5).shuffle(shuffled)  # later runs bring items older than ones already clustered
        reopened = 0
        for n in range(4):
            _ingest_and_embed(batched, store, tmp_path, shuffled[n::4], name=f"part{n}")
            reopened += _cluster(batched).reopened_items
        assert reopened > 0
        assert _events_by_items(batched) == one_run
        assert _all_checks_pass(batched)
    finally:
        drop_database(pg_server, "batched_events")


def _story(key: str, source: str, at: datetime, title: str) -> dict:
    return {"key": key, "source": source, "published_at": at.isoformat(), "title": title, "text": ""}


def test_a_story_retold_after_the_window_is_a_new_event(engine, store, tmp_path):
    start = datetime(2026, 10, 1, 8, 0, tzinfo=UTC)
    rows = [
        _story("a1", "reuters", start, "Cargo ship rams Baltimore bridge, sending it into river"),
        _story("a2", "bbc", start + timedelta(hours=20), "Baltimore bridge collapse after cargo ship strike"),
        _story("b1", "ap", start + timedelta(days=10), "Baltimore bridge collapse: cargo ship strike remembered"),
    ]
    _ingest_and_embed(engine, store, tmp_path, rows)
    _cluster(engine)
    events_of = {items: count for items, count, *_ in _events_by_items(engine)}
    assert events_of == {("a1", "a2"): 2, ("b1",): 1}

    with engine.begin() as conn:
        conn.execute(text("DELETE FROM events"))
    _cluster(
        engine,
        ClusteringParams(threshold=PARAMS.threshold, window_hours=24 * 14, max_span_hours=24 * 14, time_penalty=0.0),
    )
    assert {items for items, *_ in _events_by_items(engine)} == {("a1", "a2", "b1")}


def test_an_event_retold_without_pause_closes_after_its_maximum_span(engine, store, tmp_path):
    start = datetime(2026, 10, 1, 8, 0, tzinfo=UTC)
    sources = ["reuters", "bbc", "ap", "cnn", "guardian", "dr"]
    rows = [
        _story(
            f"r{day}",
            sources[day % 6],
            start + timedelta(days=day),
            f"Baltimore bridge collapse: cargo ship strike, day {day}",
        )
        for day in range(0, 12, 2)
    ]
    _ingest_and_embed(engine, store, tmp_path, rows)
    # told every two days, within a three-day window: only the span ends the event
    params = ClusteringParams(threshold=PARAMS.threshold, window_hours=72.0, max_span_hours=24 * 7)
    _cluster(engine, params)
    assert {items for items, *_ in _events_by_items(engine)} == {("r0", "r2", "r4", "r6"), ("r10", "r8")}


def test_a_new_embedder_rebuilds_events_in_its_space(engine, store, tmp_path):
    run_id = _ingest_and_embed(engine, store, tmp_path, labelled_rows(30))
    _cluster(engine)
    other = LexicalEmbedder(labelled_space(2))
    embed_run(engine, other, run_id)
    result = cluster_events(engine, other.name, other.dimensions, PARAMS)
    assert result.rebuilt and result.items_assigned == 30
    assert not any(check_centroids(engine, other.name, other.dimensions).values())
    assert check_centroids(engine, EMBEDDER.name, EMBEDDER.dimensions)["events_in_another_space"] > 0


def test_the_checks_catch_broken_invariants_and_a_rerun_repairs_lost_memberships(engine, store, tmp_path):
    _ingest_and_embed(engine, store, tmp_path, labelled_rows(30))
    _cluster(engine)
    assert _all_checks_pass(engine)
    with engine.begin() as conn:
        lost = conn.execute(
            text("DELETE FROM event_items WHERE item_id = (SELECT max(item_id) FROM event_items) RETURNING event_id")
        ).scalar_one()
        conn.execute(
            text(
                "INSERT INTO events (embedder, centroid, first_seen_at, last_seen_at) SELECT embedder, centroid, now(), now() FROM events LIMIT 1"
            )
        )
    assert check_items_in_one_event(engine, EMBEDDER.name)["embedded_items_in_no_event"] == 1
    assert check_events_have_items(engine)["events_without_items"] == 1
    assert check_events_have_items(engine)["events_with_wrong_item_count"] >= 2
    assert check_centroids(engine, "another-space", 384)["events_in_another_space"] > 0
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM events WHERE item_count = 0"))
    _cluster(engine)  # the newest item is clustered again, its event's count corrected
    assert _all_checks_pass(engine) and lost is not None


def test_the_dagster_assets_materialize_with_passing_checks(engine, store, tmp_path, resources):
    rows = labelled_rows(40)
    run_id = load_rows(engine, store, tmp_path, rows)
    bound = {**resources, "embedder": EmbedderResource()}
    with dg.DagsterInstance.ephemeral() as instance:  # closed with its temporary directory
        instance.add_dynamic_partitions(collection_run_partitions.name, [str(run_id)])
        enrichment = dg.materialize(
            [item_features, item_embeddings], partition_key=str(run_id), resources=bound, instance=instance
        )
        assert enrichment.success
        clustered = dg.materialize(
            [events, events_have_items, embedded_items_in_one_event, centroids_match_embedder],
            resources=bound,
            instance=instance,
        )
        assert clustered.success
        metadata = clustered.asset_materializations_for_node("events")[0].metadata
        assert (
            metadata["items_assigned"].value == 40
            and metadata["new_events"].value - metadata["events_merged"].value == metadata["dagster/row_count"].value
        )
        evaluations = clustered.get_asset_check_evaluations()
        assert len(evaluations) == 3 and all(e.passed for e in evaluations)


def test_observatory_enrich_search_and_events_cli(dagster_env, tmp_path):
    import subprocess

    def run(*args: str) -> str:
        done = subprocess.run(args, cwd=ROOT, env=dagster_env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{args} failed:\n{done.stdout}\n{done.stderr}"
        return done.stdout

    rows = labelled_rows(30)
    payload = tmp_path / "headlines.jsonl"
    payload.write_text(
        "".join(
            json.dumps({"id": r["key"], "title": r["title"], "published_at": r["published_at"]}, ensure_ascii=False)
            + "\n"
            for r in rows
        ),
        encoding="utf-8",
    )
    run("observatory", "collect", "--file", str(payload), "--source", "headlines")
    run("observatory", "ingest")
    enriched = run("observatory", "enrich")
    assert "enrich_collection_run" in enriched and "cluster_events" in enriched and "FAILED" not in enriched
    listing = run("observatory", "events", "--limit", "5")
    assert len(listing.strip().splitlines()) == 6
    hits = run("observatory", "search", "Boeing grounded")
    assert "Boeing" in hits
    again = run("observatory", "enrich")  # nothing left to enrich: only the (no-op) clustering runs
    assert "enrich_collection_run" not in again and "cluster_events" in again
