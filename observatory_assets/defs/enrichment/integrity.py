"""The invariants of enriched items, for one collection run or (``run_id=None``) the whole archive."""

from __future__ import annotations

from sqlalchemy import Connection, text

from observatory_assets.lib.statuses import ProcessingStatus

_FEATURES = """
SELECT count(*) FILTER (WHERE text_search_config IS NULL OR search_vector IS NULL), count(*)
  FROM raw_items
 WHERE processing_status = :featurized AND (CAST(:run_id AS bigint) IS NULL OR collection_run_id = :run_id)
"""

_SPACES = """
SELECT e.embedder, e.dimensions, count(*) AS n
  FROM item_embeddings e
 WHERE CAST(:run_id AS bigint) IS NULL
    OR e.item_id IN (SELECT id FROM raw_items WHERE collection_run_id = :run_id)
 GROUP BY 1, 2 ORDER BY 3 DESC
"""


def incomplete_features(conn: Connection, run_id: int | None = None) -> dict[str, int]:
    """Featurized items without a text-search configuration or a full-text vector."""
    params = {"run_id": run_id, "featurized": ProcessingStatus.FEATURIZED}
    incomplete, featurized = conn.execute(text(_FEATURES), params).one()
    return {"featurized_items": featurized, "without_config_or_vector": incomplete}


def vectors_of_other_spaces(
    conn: Connection, embedder: str, dimensions: int, run_id: int | None = None
) -> dict[str, int]:
    """Vectors not from ``embedder`` with ``dimensions`` (they await re-embedding), by their space."""
    rows = conn.execute(text(_SPACES), {"run_id": run_id}).all()
    return {f"{r.embedder} ({r.dimensions})": r.n for r in rows if (r.embedder, r.dimensions) != (embedder, dimensions)}
