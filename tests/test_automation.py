"""Declarative automation, tick by tick on a real instance: a collection run's ``raw_items`` partition
materialized by any path (here reported as the UI or a backfill would leave it, no job involved) brings
each asset of the flow up to date in order, one step per tick, and missing snapshot days are filled."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dagster as dg

from observatory_assets.definitions import defs
from observatory_assets.defs.trends.assets import SNAPSHOT_FILL_DAYS
from observatory_assets.lib.dagster import collection_run_partitions


def _materialized(instance: dg.DagsterInstance, asset: str, *partitions: str | None) -> None:
    for partition in partitions or (None,):
        instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=asset, partition=partition))


def _requested(result) -> dict[str, set]:
    graph = defs.resolve_asset_graph()
    return {
        key.to_user_string(): set(result.get_requested_partitions(key))
        for key in graph.get_all_asset_keys()
        if result.get_num_requested(key)
    }


def test_raw_items_materialized_by_any_path_flows_to_todays_snapshot_one_step_per_tick():
    today = datetime.now(UTC).date()
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(collection_run_partitions.name, ["1", "2"])
        tick = dg.evaluate_automation_conditions(defs=defs, instance=instance)
        assert _requested(tick) == {}  # nothing materialized yet: nothing to follow

        _materialized(instance, "raw_items", "1")
        tick = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=tick.cursor)
        # features, embeddings and actor links of that collection run, in one run; events wait for the embeddings
        assert _requested(tick) == {"item_features": {"1"}, "item_embeddings": {"1"}, "item_actors": {"1"}}

        _materialized(instance, "item_features", "1")
        _materialized(instance, "item_embeddings", "1")
        _materialized(instance, "item_actors", "1")
        tick = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=tick.cursor)
        # collection run 2 was never ingested: it does not hold the events back; today's volumes and the
        # actor network follow
        assert _requested(tick) == {"events": {None}, "volume_stats": {today.isoformat()}, "actor_network": {None}}

        _materialized(instance, "events")
        _materialized(instance, "volume_stats", today.isoformat())
        _materialized(instance, "actor_network")
        tick = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=tick.cursor)
        assert _requested(tick) == {"trend_evidence": {None}}

        _materialized(instance, "trend_evidence")
        tick = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=tick.cursor)
        days = {(today - timedelta(days=n)).isoformat() for n in range(SNAPSHOT_FILL_DAYS)}
        # today's snapshot, and every missing day of the charts' window, filled from the ledger
        assert _requested(tick) == {"trend_snapshots": days}

        _materialized(instance, "trend_snapshots", *sorted(days))
        tick = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=tick.cursor)
        assert _requested(tick) == {}  # up to date: nothing runs again

        _materialized(instance, "raw_items", "1")  # re-ingested (e.g. a forced re-ingest from the UI)
        tick = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=tick.cursor)
        assert _requested(tick) == {"item_features": {"1"}, "item_embeddings": {"1"}, "item_actors": {"1"}}
