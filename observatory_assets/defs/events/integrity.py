"""The invariants of events, for what one clustering run changed (``since`` its start) or the whole archive.

``events.created_at`` / ``updated_at`` and ``event_items.assigned_at`` are set by
the clustering transaction, so "changed since the run started" is an indexed,
run-sized selection; ``since=None`` measures everything (the weekly audit).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Engine, text

_EVENTS_IN_SCOPE = """
(SELECT id FROM events WHERE CAST(:since AS timestamptz) IS NULL
                          OR created_at >= :since OR updated_at >= :since
 UNION
 SELECT event_id FROM event_items WHERE CAST(:since AS timestamptz) IS NOT NULL AND assigned_at >= :since)
"""


def check_events_have_items(engine: Engine, since: datetime | None = None) -> dict:
    """Events without items, and events whose stored item count differs from their memberships."""
    with engine.connect() as conn:
        empty, miscounted = conn.execute(
            text(
                f"""
                SELECT count(*) FILTER (WHERE n = 0), count(*) FILTER (WHERE n = 0 OR n <> e.item_count)
                  FROM events e
                  CROSS JOIN LATERAL (SELECT count(*) AS n FROM event_items x WHERE x.event_id = e.id) x
                 WHERE e.id IN {_EVENTS_IN_SCOPE}
                """
            ),
            {"since": since},
        ).one()
    return {"events_without_items": empty, "events_with_wrong_item_count": miscounted}


def check_items_in_one_event(engine: Engine, embedder: str, since: datetime | None = None) -> dict:
    """Embedded items (of ``embedder``) in no event, and memberships of items without such a vector.

    ``event_items`` is keyed on the item, so no item can be in two events. With
    ``since``, only memberships assigned since then are checked (items still
    waiting are the next clustering run's work)."""
    with engine.connect() as conn:
        unclustered, orphaned = conn.execute(
            text(
                """
                SELECT CASE WHEN CAST(:since AS timestamptz) IS NULL THEN
                       (SELECT count(*) FROM item_embeddings e WHERE e.embedder = :embedder
                           AND NOT EXISTS (SELECT 1 FROM event_items x WHERE x.item_id = e.item_id))
                       ELSE 0 END,
                       (SELECT count(*) FROM event_items x
                         WHERE (CAST(:since AS timestamptz) IS NULL OR x.assigned_at >= :since)
                           AND NOT EXISTS (SELECT 1 FROM item_embeddings e
                                            WHERE e.item_id = x.item_id AND e.embedder = :embedder))
                """
            ),
            {"embedder": embedder, "since": since},
        ).one()
    return {"embedded_items_in_no_event": unclustered, "clustered_items_without_vector": orphaned}


def check_centroids(engine: Engine, embedder: str, dimensions: int, since: datetime | None = None) -> dict:
    """Events whose centroid is not in the embedder's space (other embedder or dimensions)."""
    with engine.connect() as conn:
        wrong = conn.execute(
            text(
                f"""
                SELECT count(*) FROM events
                 WHERE (embedder <> :embedder OR vector_dims(centroid) <> :dimensions) AND id IN {_EVENTS_IN_SCOPE}
                """
            ),
            {"embedder": embedder, "dimensions": dimensions, "since": since},
        ).scalar_one()
    return {"events_in_another_space": wrong}


def count_events(engine: Engine) -> int:
    """How many events the archive holds."""
    with engine.connect() as conn:
        return conn.execute(text("SELECT count(*) FROM events")).scalar_one()
