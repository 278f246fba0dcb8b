"""Dagster definitions of the ``events`` asset and its checks."""

from datetime import datetime

import dagster as dg
from pydantic import Field

from observatory_assets.defs.enrichment.resources import EmbedderResource
from observatory_assets.defs.events.clustering import EVENTS, ClusteringParams, cluster_events, cohesion_exponent_of
from observatory_assets.defs.events.integrity import (
    check_centroids,
    check_events_have_items,
    check_items_in_one_event,
    count_events,
)
from observatory_assets.defs.events.tracking import DEFAULT_COHESION_EXPONENT
from observatory_assets.lib.dagster import checked_since, follows, worker_metadata
from observatory_assets.lib.sql import database_now
from resources import PostgresResource


class EventsConfig(dg.Config):
    window_hours: float = Field(default=24.0, description="An event stays open this long after its newest item.")
    max_span_hours: float = Field(default=168.0, description="An event takes no items this long after its first.")
    threshold: float | None = Field(
        default=None,
        description="Similarity from which an item joins an event; default: the embedder's calibrated one.",
    )
    time_penalty: float = Field(default=0.1, description="Similarity lost when an event was last seen a window ago.")
    merge_margin: float | None = Field(
        default=None, description="Open events this much above the threshold alike merge; default: the embedder's."
    )

    def params(
        self,
        default_threshold: float,
        default_merge_margin: float,
        cohesion_exponent: float = DEFAULT_COHESION_EXPONENT,
    ) -> ClusteringParams:
        return ClusteringParams(
            threshold=default_threshold if self.threshold is None else self.threshold,
            window_hours=self.window_hours,
            max_span_hours=self.max_span_hours,
            time_penalty=self.time_penalty,
            merge_margin=default_merge_margin if self.merge_margin is None else self.merge_margin,
            cohesion_exponent=cohesion_exponent,
        )


@dg.asset(
    deps=["raw_items", "item_embeddings"],
    group_name=EVENTS,
    kinds={"postgres"},
    automation_condition=follows("item_embeddings"),
)
def events(
    context: dg.AssetExecutionContext, config: EventsConfig, postgres: PostgresResource, embedder: EmbedderResource
) -> dg.MaterializeResult:
    """News events: embedded items clustered online in publication order (24 h window, similarity
    threshold); open events whose centroids converge merge into the older one. Incremental: each run clusters the items not clustered
    yet; re-running never duplicates, and batching does not change the result."""
    current = embedder.get_embedder(postgres.get_engine())
    with postgres.get_engine().connect() as conn:
        started_at = database_now(conn)
    result = cluster_events(
        postgres.get_engine(),
        current.name,
        current.dimensions,
        config.params(current.join_threshold, current.merge_margin, cohesion_exponent_of(current)),
    )
    if result.rebuilt:
        context.log.warning(f"events of another embedder were dropped and rebuilt with {current.name}")
    total = count_events(postgres.get_engine())
    largest = "\n".join(
        ["| event | items | sources | title |", "|---|---|---|---|"]
        + [
            f"| {e['event']} | {e['items']} | {e['sources']} | {e['title'].replace('|', '/')} |"
            for e in result.largest_events
        ]
    )
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": total,
            CLUSTERED_SINCE: started_at.isoformat(),
            "embedder": current.name,
            "items_assigned": result.items_assigned,
            "new_events": result.new_events,
            "joined_existing_events": result.joined_existing,
            "events_updated": result.events_updated,
            "events_removed": result.events_removed,
            "events_merged": result.events_merged,
            "late_items_reclustered": result.reopened_items,
            "rebuilt_for_new_embedder": result.rebuilt,
            "largest_events": dg.MetadataValue.md(largest if result.largest_events else "_no events changed_"),
            "seconds": round(result.seconds, 3),
            "items_per_second": round(result.items_assigned / max(result.seconds, 1e-9), 1),
            **worker_metadata(),
        }
    )


#: Metadata key of an events materialization: when its clustering began (checks look at what changed since).
CLUSTERED_SINCE = "clustered_since"


def _since(context: dg.AssetCheckExecutionContext) -> datetime | None:
    started = checked_since(context, events.key, CLUSTERED_SINCE)
    return datetime.fromisoformat(started) if started else None


@dg.asset_check(asset=events, description="Every event the run changed has items, and its item count is right.")
def events_have_items(context: dg.AssetCheckExecutionContext, postgres: PostgresResource) -> dg.AssetCheckResult:
    found = check_events_have_items(postgres.get_engine(), _since(context))
    return dg.AssetCheckResult(passed=not any(found.values()), metadata=found)


@dg.asset_check(asset=events, description="Every item the run clustered is in exactly one event, with a vector.")
def embedded_items_in_one_event(
    context: dg.AssetCheckExecutionContext, postgres: PostgresResource, embedder: EmbedderResource
) -> dg.AssetCheckResult:
    found = check_items_in_one_event(
        postgres.get_engine(), embedder.get_embedder(postgres.get_engine()).name, _since(context)
    )
    return dg.AssetCheckResult(passed=not any(found.values()), metadata=found)


@dg.asset_check(asset=events, description="The centroids the run wrote have the embedder's dimensions and space.")
def centroids_match_embedder(
    context: dg.AssetCheckExecutionContext, postgres: PostgresResource, embedder: EmbedderResource
) -> dg.AssetCheckResult:
    current = embedder.get_embedder(postgres.get_engine())
    found = check_centroids(postgres.get_engine(), current.name, current.dimensions, _since(context))
    return dg.AssetCheckResult(
        passed=not any(found.values()), metadata={**found, "embedder": current.name, "dimensions": current.dimensions}
    )
