"""The flow runs itself: a real ``dagster-daemon`` on a real instance, one file collected with ``observatory
collect``, and with no job started by hand the collection run is ingested (collection_run_sensor), then
declarative automation brings item_features, item_embeddings, events, trend_evidence and today's
trend_snapshots partition up to date, in that order."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest
from sqlalchemy import text

from observatory_assets.definitions import defs
from observatory_assets.defs.ingestion.demo_data import iter_items, write_jsonl
from observatory_assets.lib.dagster import collection_run_partitions
from resources.postgres import engine_for
from sensors.automation import automation_sensor
from tests.conftest import ROOT
from tests.support.daemon import start_daemon, stop_daemon

#: A fresh home with a first small delivery (the cold start).
ITEMS = 3
#: Seconds after which the flow is taken for stuck (a guard against hanging, not a speed target).
STUCK_AFTER_SECONDS = 900
FLOW = ["raw_items", "item_features", "item_embeddings", "events", "trend_evidence", "trend_snapshots"]


def _flow_state(engine, today) -> dict:
    with engine.connect() as conn:
        return dict(
            conn.execute(
                text(
                    """
                    SELECT (SELECT count(*) FROM raw_items) AS items,
                           (SELECT count(*) FROM raw_items r WHERE NOT EXISTS
                               (SELECT 1 FROM event_items ei WHERE ei.item_id = r.id)) AS items_without_event,
                           (SELECT count(*) FROM trends WHERE active) AS active_trends,
                           (SELECT count(*) FROM trend_snapshots WHERE snapshot_date = :today) AS snapshots_today
                    """
                ),
                {"today": today},
            )
            .mappings()
            .one()
        )


def _first_materializations(instance: dg.DagsterInstance) -> dict[str, float]:
    """When each asset of the flow was first materialized (the ones that were)."""
    records = {name: instance.fetch_materializations(dg.AssetKey(name), limit=1000).records for name in FLOW}
    return {name: min(r.timestamp for r in found) for name, found in records.items() if found}


def _wait_for_the_flow(engine, instance: dg.DagsterInstance, daemon, log_path: Path) -> tuple[dict, dict]:
    """The database's state and the first materializations once the items are in events and today's
    snapshot partition is materialized for every active trend."""
    deadline = time.monotonic() + STUCK_AFTER_SECONDS
    while True:
        today = datetime.now(UTC).date()
        state = _flow_state(engine, today)
        snapshot_today = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("trend_snapshots"), asset_partitions=[today.isoformat()]),
            limit=1,
        ).records
        flowed = state["items"] and not state["items_without_event"] and state["snapshots_today"]
        if flowed and snapshot_today and state["snapshots_today"] == state["active_trends"]:
            return state, _first_materializations(instance)
        assert daemon.poll() is None, "the daemon exited:\n" + log_path.read_text()[-3000:]
        assert time.monotonic() < deadline, f"stuck at {state}\n" + log_path.read_text()[-3000:]
        time.sleep(2)


@pytest.mark.slow
def test_a_collected_file_flows_to_events_and_todays_trend_snapshot_with_no_job_started_by_hand(
    dagster_env, database_url, tmp_path
):
    feed = tmp_path / "feed.jsonl"
    write_jsonl(feed, iter_items(ITEMS, seed=11))
    collected = subprocess.run(
        [sys.executable, "-m", "observatory_assets.cli", "collect", "--file", str(feed), "--source", "wire"],
        env=dagster_env, cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert collected.returncode == 0, collected.stderr

    engine = engine_for(database_url)
    log_path = tmp_path / "daemon.log"
    daemon = start_daemon(dagster_env, log_path)
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("DAGSTER_HOME", dagster_env["DAGSTER_HOME"])
            with dg.DagsterInstance.get() as instance:
                state, first_materialized = _wait_for_the_flow(engine, instance, daemon, log_path)
                runs = [r.dagster_run for r in instance.get_run_records()]
    finally:
        stop_daemon(daemon)

    assert state["items"] > 0 and state["active_trends"] > 0
    assert set(first_materialized) == set(FLOW)
    # every run was started by a sensor: the ingestion by collection_run_sensor, the rest by automation
    assert {run.tags.get("dagster/sensor_name") for run in runs} == {"collection_run_sensor", automation_sensor.name}
    assert all(
        run.job_name == "__ASSET_JOB" for run in runs if run.tags["dagster/sensor_name"] == automation_sensor.name
    )
    # each asset of the flow was first materialized after the one before it
    assert [first_materialized[name] for name in FLOW] == sorted(first_materialized.values()), first_materialized


def test_work_left_before_the_first_evaluation_is_picked_up_on_the_first_tick():
    """A daemon that was not running: raw_items of one collection run and the events were materialized
    before automation ever evaluated (eager() alone sees nothing on its first tick). The first tick asks for
    that run's features and embeddings and for the trend evidence nobody derived from the events; a run
    whose raw_items are missing (its ingestion failed) is left alone."""
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(collection_run_partitions.name, ["1", "2"])
        for asset, partition in (("raw_items", "1"), ("item_features", "2"), ("events", None)):
            instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=asset, partition=partition))
        tick = dg.evaluate_automation_conditions(defs=defs, instance=instance)
        keys = defs.resolve_asset_graph().get_all_asset_keys()
        requested = {
            k.to_user_string(): set(tick.get_requested_partitions(k)) for k in keys if tick.get_num_requested(k)
        }
        assert requested == {"item_features": {"1"}, "item_embeddings": {"1"}, "trend_evidence": {None}}
