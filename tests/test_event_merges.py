"""Converging events merge online, honestly: the older event keeps its id, the merge is recorded, the
younger event's trend evidence follows it, and items arriving out of order replay the merge (the same
items in one run or several give the same events)."""

from datetime import UTC, datetime, timedelta

import numpy as np
from sqlalchemy import text

from observatory_assets.defs.enrichment.vectors import DIMENSIONS
from observatory_assets.defs.events.clustering import ClusteringParams, cluster_events
from tests.support.helpers import load_rows

SPACE = "test-directions"
#: Joins from 0.3; two events whose centroids reach 0.4 are merged.
PARAMS = ClusteringParams(threshold=0.3, merge_margin=0.1)
START = datetime(2026, 11, 2, 8, tzinfo=UTC)
E1, E2 = np.eye(DIMENSIONS)[0], np.eye(DIMENSIONS)[1]
BRIDGE = (1.2 * E1 + E2) / np.sqrt(2.44)
#: Two angles of one story (orthogonal: each founds an event), then tellings combining both, closer to the
#: first angle (they join its event): after one the centroids are 0.34 alike, after two 0.45 (merged).
#: Ten minutes apart, in this order.
ITEMS = [("angle-a", E1), ("angle-b", E2), ("both-1", BRIDGE), ("both-late", BRIDGE), ("both-2", BRIDGE)]


def _load(engine, store, tmp_path, keys: list[str], name: str) -> None:
    rows = [
        {"key": key, "title": f"Telling {key}", "source": f"outlet-{key}",
         "published_at": (START + timedelta(minutes=10 * n)).isoformat()}
        for n, (key, _) in enumerate(ITEMS) if key in keys
    ]  # fmt: skip
    load_rows(engine, store, tmp_path, rows, name=name)
    vectors = {key: vector for key, vector in ITEMS}
    with engine.begin() as conn:
        for item_id, key in conn.execute(text("SELECT id, external_id FROM raw_items WHERE external_id = ANY(:k)"),
                                         {"k": keys}).all():  # fmt: skip
            conn.execute(
                text("INSERT INTO item_embeddings (item_id, embedder, dimensions, embedding) VALUES (:i, :e, :d, :v)"),
                {"i": item_id, "e": SPACE, "d": DIMENSIONS, "v": str(vectors[key].tolist())},
            )


def _events(engine) -> dict[int, list[str]]:
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT x.event_id, array_agg(r.external_id ORDER BY r.external_id) FROM event_items x "
                 "JOIN raw_items r ON r.id = x.item_id GROUP BY x.event_id")
        ).all()  # fmt: skip
    return {event: items for event, items in rows}


def test_converging_events_merge_into_the_older_one_and_the_evidence_follows(engine, store, tmp_path):
    _load(engine, store, tmp_path, ["angle-a", "angle-b", "both-1"], "first")
    first = cluster_events(engine, SPACE, DIMENSIONS, PARAMS)
    assert first.events_merged == 0
    events = _events(engine)
    older = next(e for e, items in events.items() if "angle-a" in items)
    younger = next(e for e, items in events.items() if items == ["angle-b"])
    assert events[older] == ["angle-a", "both-1"]
    with engine.begin() as conn:
        trend = conn.execute(text("INSERT INTO trends (name) VALUES ('bridges') RETURNING id")).scalar_one()
        conn.execute(
            text("INSERT INTO trend_evidence (trend_id, event_id, signal, credibility, corroboration, novelty, "
                 "severity, delta_log_odds, event_at) VALUES (:t, :e, 'collapse', 0.8, 0.5, 0.5, 0.5, 0.2, :at)"),
            {"t": trend, "e": younger, "at": START},
        )  # fmt: skip

    _load(engine, store, tmp_path, ["both-2"], "second")
    second = cluster_events(engine, SPACE, DIMENSIONS, PARAMS)
    assert second.events_merged == 1
    assert _events(engine) == {older: ["angle-a", "angle-b", "both-1", "both-2"]}
    with engine.connect() as conn:
        merge = conn.execute(text("SELECT merged_event_id, into_event_id, similarity FROM event_merges")).one()
        count, sources = conn.execute(text("SELECT item_count, source_count FROM events WHERE id = :e"),
                                      {"e": older}).one()  # fmt: skip
        evidence = conn.execute(text("SELECT event_id FROM trend_evidence")).scalars().all()
    assert merge[:2] == (younger, older) and merge[2] >= 0.4
    assert (count, sources) == (4, 4) and evidence == [older]
    again = cluster_events(engine, SPACE, DIMENSIONS, PARAMS)
    assert again.items_assigned == 0 and _events(engine) == {older: ["angle-a", "angle-b", "both-1", "both-2"]}


def test_an_item_older_than_a_merge_replays_it(pg_server, migrated_template, engine, store, tmp_path):
    from resources.postgres import engine_for
    from tests.conftest import create_database, drop_database

    _load(engine, store, tmp_path, [key for key, _ in ITEMS], "all")
    cluster_events(engine, SPACE, DIMENSIONS, PARAMS)
    one_run = sorted(_events(engine).values())

    url = create_database(pg_server, "merge_replay", template=migrated_template)
    try:
        batched = engine_for(url)
        _load(batched, store, tmp_path, ["angle-a", "angle-b", "both-1", "both-2"], "early")
        assert cluster_events(batched, SPACE, DIMENSIONS, PARAMS).events_merged == 1  # when both-2 joined
        # an item older than that merge: the merged event is re-clustered from its first item
        _load(batched, store, tmp_path, ["both-late"], "late")
        replayed = cluster_events(batched, SPACE, DIMENSIONS, PARAMS)
        assert replayed.reopened_items == 4 and replayed.events_merged == 1
        assert sorted(_events(batched).values()) == one_run == [["angle-a", "angle-b", "both-1", "both-2", "both-late"]]
        with batched.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM event_merges")).scalar_one() == 1
    finally:
        drop_database(pg_server, "merge_replay")
