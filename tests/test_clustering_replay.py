"""The clustering run on Postgres and the in-memory tracker give the same events from the same vectors.

``bench/cluster_quality.py`` sweeps thresholds by replaying the clustering in memory on the vectors the
pipeline stored; this holds it to what the pipeline itself does: the same items grouped together, at the
embedder's threshold and at a lower one where events merge as they converge."""

import json

import numpy as np
import pytest
from sqlalchemy import text

from observatory_assets.defs.enrichment.embeddings import embed_run
from observatory_assets.defs.enrichment.lexical import LexicalEmbedder
from observatory_assets.defs.events.clustering import ClusteringParams, cluster_events
from observatory_assets.defs.events.tracking import cluster_in_memory
from tests.support.helpers import labelled_rows, labelled_space, load_rows

EMBEDDER = LexicalEmbedder(labelled_space())


def _stored_items(engine) -> list[tuple]:
    """The embedded items in publication order (then content hash), as the clustering run takes them."""
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                """
                SELECT r.external_id, coalesce(r.published_at, r.fetched_at) AS at, r.content_hash, r.source_id,
                       e.embedding::text AS vector
                  FROM item_embeddings e JOIN raw_items r ON r.id = e.item_id
                 ORDER BY at, r.content_hash
                """
            )
        ).all()
    return [
        (r.external_id, r.at, bytes(r.content_hash), r.source_id, np.array(json.loads(r.vector), np.float32))
        for r in rows
    ]


def _grouped(assignment: dict) -> set[frozenset]:
    groups: dict = {}
    for item, event in assignment.items():
        groups.setdefault(event, set()).add(item)
    return {frozenset(g) for g in groups.values()}


@pytest.mark.parametrize("factor", [1.0, 0.5])
def test_the_in_memory_replay_groups_the_items_as_the_clustering_run_did(engine, store, tmp_path, factor):
    rows = labelled_rows()
    run_id = load_rows(engine, store, tmp_path, rows)
    embed_run(engine, EMBEDDER, run_id)
    params = ClusteringParams(threshold=EMBEDDER.join_threshold * factor, merge_margin=EMBEDDER.merge_margin)
    result = cluster_events(engine, EMBEDDER.name, EMBEDDER.dimensions, params)
    with engine.connect() as conn:
        stored = dict(
            conn.execute(
                text("SELECT r.external_id, x.event_id FROM event_items x JOIN raw_items r ON r.id = x.item_id")
            ).all()
        )

    items = _stored_items(engine)
    numbered = [
        (n, at, item_hash, source, vector.astype(np.float64))
        for n, (_, at, item_hash, source, vector) in enumerate(items)
    ]
    replayed = {items[n][0]: event for n, event in cluster_in_memory(numbered, EMBEDDER.dimensions, params).items()}

    assert len(stored) == len(items) > len(rows) / 2
    assert _grouped(replayed) == _grouped(stored)
    assert factor == 1.0 or result.events_merged > 0  # the lower threshold exercises merging
