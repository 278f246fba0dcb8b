"""Dagster definitions of the ``events`` asset and its checks."""

import dagster as dg
from pydantic import Field
from sqlalchemy import Engine, text

from observatory_assets.defs.enrichment.assets import EmbedderResource
from observatory_assets.defs.events.clustering import EVENTS, ClusteringParams, cluster_events
from resources import PostgresResource

# ---------------------------------------------------------------- Dagster


class EventsConfig(dg.Config):
    window_hours: float = Field(default=72.0, description="An event stays open this long after its newest item.")
    max_span_hours: float = Field(default=168.0, description="An event takes no items this long after its first.")
    threshold: float | None = Field(
        default=None,
        description="Similarity from which an item joins an event; default: the embedder's calibrated one.",
    )
    time_penalty: float = Field(default=0.1, description="Similarity lost when an event was last seen a window ago.")
    large_event_size: int = Field(default=5, description="From this size on, joining needs a close member too.")
    member_margin: float = Field(default=0.1, description="How much closer that member must be than the threshold.")

    def params(self, default_threshold: float) -> ClusteringParams:
        return ClusteringParams(
            threshold=default_threshold if self.threshold is None else self.threshold,
            window_hours=self.window_hours,
            max_span_hours=self.max_span_hours,
            time_penalty=self.time_penalty,
            large_event_size=self.large_event_size,
            member_margin=self.member_margin,
        )


@dg.asset(deps=["item_embeddings"], group_name=EVENTS, kinds={"postgres"})
def events(
    context: dg.AssetExecutionContext, config: EventsConfig, postgres: PostgresResource, embedder: EmbedderResource
) -> dg.MaterializeResult:
    """News events: embedded items clustered online in publication order (72 h window, similarity
    threshold, stricter check for large events). Incremental: each run clusters the items not clustered
    yet; re-running never duplicates, and batching does not change the result."""
    current = embedder.get_embedder(postgres.get_engine())
    result = cluster_events(
        postgres.get_engine(), current.name, current.dimensions, config.params(current.join_threshold)
    )
    if result.rebuilt:
        context.log.warning(f"events of another embedder were dropped and rebuilt with {current.name}")
    with postgres.get_engine().connect() as conn:
        total = conn.execute(text("SELECT count(*) FROM events")).scalar_one()
    largest = "\n".join(
        ["| event | items | sources | title |", "|---|---|---|---|"]
        + [
            f"| {e['event']} | {e['items']} | {e['sources']} | {e['title'].replace('|', '/')} |"
            for e in result.largest_events
        ]
    )
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": dg.MetadataValue.int(total),
            "embedder": dg.MetadataValue.text(current.name),
            "items_assigned": dg.MetadataValue.int(result.items_assigned),
            "new_events": dg.MetadataValue.int(result.new_events),
            "joined_existing_events": dg.MetadataValue.int(result.joined_existing),
            "events_updated": dg.MetadataValue.int(result.events_updated),
            "events_removed": dg.MetadataValue.int(result.events_removed),
            "late_items_reclustered": dg.MetadataValue.int(result.reopened_items),
            "rebuilt_for_new_embedder": dg.MetadataValue.bool(result.rebuilt),
            "largest_events": dg.MetadataValue.md(largest if result.largest_events else "_no events changed_"),
            "seconds": dg.MetadataValue.float(round(result.seconds, 3)),
            "items_per_second": dg.MetadataValue.float(round(result.items_assigned / max(result.seconds, 1e-9), 1)),
        }
    )


def check_events_have_items(engine: Engine) -> dict:
    """Events without items, and events whose stored item count differs from their memberships."""
    with engine.connect() as conn:
        empty, miscounted = conn.execute(
            text(
                """
                SELECT count(*) FILTER (WHERE n IS NULL), count(*) FILTER (WHERE n IS DISTINCT FROM e.item_count)
                  FROM events e
                  LEFT JOIN (SELECT event_id, count(*) AS n FROM event_items GROUP BY event_id) x ON x.event_id = e.id
                """
            )
        ).one()
    return {"events_without_items": empty, "events_with_wrong_item_count": miscounted}


def check_items_in_one_event(engine: Engine, embedder: str) -> dict:
    """Embedded items (of ``embedder``) in no event, and memberships of items without such a vector.

    ``event_items`` is keyed on the item, so no item can be in two events."""
    with engine.connect() as conn:
        unclustered, orphaned = conn.execute(
            text(
                """
                SELECT (SELECT count(*) FROM item_embeddings e WHERE e.embedder = :embedder
                           AND NOT EXISTS (SELECT 1 FROM event_items x WHERE x.item_id = e.item_id)),
                       (SELECT count(*) FROM event_items x WHERE NOT EXISTS
                           (SELECT 1 FROM item_embeddings e WHERE e.item_id = x.item_id AND e.embedder = :embedder))
                """
            ),
            {"embedder": embedder},
        ).one()
    return {"embedded_items_in_no_event": unclustered, "clustered_items_without_vector": orphaned}


def check_centroids(engine: Engine, embedder: str, dimensions: int) -> dict:
    """Events whose centroid is not in the embedder's space (other embedder or dimensions)."""
    with engine.connect() as conn:
        wrong = conn.execute(
            text("SELECT count(*) FROM events WHERE embedder <> :embedder OR vector_dims(centroid) <> :dimensions"),
            {"embedder": embedder, "dimensions": dimensions},
        ).scalar_one()
    return {"events_in_another_space": wrong}


@dg.asset_check(asset=events, description="Every event has at least one item, and its item count is right.")
def events_have_items(postgres: PostgresResource) -> dg.AssetCheckResult:
    found = check_events_have_items(postgres.get_engine())
    return dg.AssetCheckResult(passed=not any(found.values()), metadata=found)


@dg.asset_check(asset=events, description="Every embedded item is in exactly one event.")
def embedded_items_in_one_event(postgres: PostgresResource, embedder: EmbedderResource) -> dg.AssetCheckResult:
    found = check_items_in_one_event(postgres.get_engine(), embedder.get_embedder(postgres.get_engine()).name)
    return dg.AssetCheckResult(passed=not any(found.values()), metadata=found)


@dg.asset_check(asset=events, description="Centroids have the embedder's dimensions and come from its space.")
def centroids_match_embedder(postgres: PostgresResource, embedder: EmbedderResource) -> dg.AssetCheckResult:
    current = embedder.get_embedder(postgres.get_engine())
    found = check_centroids(postgres.get_engine(), current.name, current.dimensions)
    return dg.AssetCheckResult(
        passed=not any(found.values()), metadata={**found, "embedder": current.name, "dimensions": current.dimensions}
    )


events_job = dg.define_asset_job(
    "cluster_events",
    selection=dg.AssetSelection.assets(events),
    description="Cluster newly embedded items into events.",
)


defs = dg.Definitions(
    assets=[events],
    asset_checks=[events_have_items, embedded_items_in_one_event, centroids_match_embedder],
    jobs=[events_job],
)
