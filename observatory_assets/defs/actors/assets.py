"""Actors and analysis as assets: who wrote or is mentioned in each collection run's items, the daily
volumes along every dimension with a chart per design, and the actor network with its communities."""

from datetime import UTC, datetime, timedelta

import dagster as dg

from observatory_assets.defs.actors.analysis import (
    build_actor_network,
    compute_volume_stats,
    network_metrics,
    store_network_metrics,
    top_actors_per_community,
)
from observatory_assets.defs.actors.charts import store_volume_charts
from observatory_assets.defs.actors.linking import link_items
from observatory_assets.lib.charts import png_data_uri
from observatory_assets.lib.dagster import collection_run_partitions, eager_or_never_done, follows, markdown_table
from resources import ObjectStoreResource, PostgresResource
from resources.embedded import author_pseudonym_key

ACTORS = "actors"
volume_days = dg.DailyPartitionsDefinition(start_date="2025-01-01", timezone="UTC", end_offset=1)


@dg.asset(
    deps=["raw_items"],
    partitions_def=collection_run_partitions,
    group_name=ACTORS,
    kinds={"postgres"},
    automation_condition=eager_or_never_done(),
)
def item_actors(context: dg.AssetExecutionContext, postgres: PostgresResource) -> dg.MaterializeResult:
    """Which actors wrote the collection run's items (by platform and handle first, then by name or alias,
    on the pseudonymised author) and which they mention, each link saying how it was made. Re-running
    replaces the run's links; ``observatory sources sync`` relinks the actors whose catalog entry changed."""
    run_id = int(context.partition_key)
    with postgres.get_engine().begin() as conn:
        counts = link_items(conn, author_pseudonym_key(), run_id=run_id)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": counts.authors + counts.mentions,
            "collection_run": run_id,
            "authored": counts.authors,
            "mentions": counts.mentions,
        }  # fmt: skip
    )


#: A day's volumes read every collection run's items (whatever run delivered that day's items).
_EVERY_RUN = dg.AllPartitionMapping()


@dg.asset(
    deps=[
        dg.AssetDep(item_actors, partition_mapping=_EVERY_RUN),
        dg.AssetDep("item_features", partition_mapping=_EVERY_RUN),
    ],
    partitions_def=volume_days,
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name=ACTORS,
    kinds={"postgres", "s3"},
    automation_condition=dg.AutomationCondition.in_latest_time_window() & follows("item_actors", "item_features"),
)
def volume_stats(
    context: dg.AssetExecutionContext, postgres: PostgresResource, object_store: ObjectStoreResource
) -> dg.MaterializeResult:
    """Daily items per query design by platform, arena, source, language, matched term, sentiment label and
    actor (UTC days of publication), recounted from scratch for the partition's days in one pass (a backfill
    is one run); each design's 30-day chart by platform is stored (``analysis/volume/<design>.png``)."""
    window = context.partition_time_window
    first, last = window.start.date(), (window.end - timedelta(days=1)).date()
    with postgres.get_engine().begin() as conn:
        written = compute_volume_stats(conn, first, last)
        charts = store_volume_charts(conn, object_store.get_store(), min(last, datetime.now(UTC).date()))
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": written,
            "days": f"{first} … {last}" if first != last else str(first),
            "charts": dg.MetadataValue.md(
                "\n\n".join(f"**{c.design}** (`{c.key}`)\n\n![{c.design}]({png_data_uri(c.png)})" for c in charts[:5])
                or "_no items on these days_"
            ),
        }
    )


@dg.asset(
    deps=[item_actors, "events"],
    group_name=ACTORS,
    kinds={"postgres", "networkx"},
    automation_condition=follows("item_actors", "events"),
)
def actor_network(postgres: PostgresResource) -> dg.MaterializeResult:
    """The co-occurrence network of actors and pseudonymous authors (shared events, mentions) with each
    node's degree, weighted degree, betweenness and Louvain community (``actor_network_nodes``, node
    attributes of the GEXF export); the best-connected nodes of the largest communities as a table."""
    with postgres.get_engine().begin() as conn:
        graph = build_actor_network(conn)
        stored = store_network_metrics(conn, graph, network_metrics(graph))
        table = top_actors_per_community(conn)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": stored,
            "edges": graph.number_of_edges(),
            "communities": len({row["community"] for row in table}),
            "top_actors_per_community": dg.MetadataValue.md(markdown_table(table)),
        }
    )
