"""The flow runs itself: a real ``dagster-daemon`` on a real instance, one file collected with ``observatory
collect``, and with no job started by hand the collection run is ingested (collection_run_sensor), then
declarative automation brings item_features, item_embeddings, events, trend_evidence and today's
trend_snapshots partition up to date, in that order. A run loaded by hand before the daemon's first start
is carried on too."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest
from sqlalchemy import text

from observatory_assets.definitions import defs
from observatory_assets.defs.ingestion.demo_data import iter_items, write_jsonl
from observatory_assets.lib.dagster import collection_run_partitions
from sensors.automation import automation_sensor
from tests.conftest import ROOT
from tests.support.daemon import run_origin, start_daemon, stop_daemon, wait_while_it_moves

#: A fresh home with a first small delivery (the cold start).
ITEMS = 3
FLOW = ["raw_items", "item_features", "item_embeddings", "events", "trend_evidence", "trend_snapshots"]
COLLECTION_SENSOR = "collection_run_sensor"


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


def _progress(engine, instance: dg.DagsterInstance) -> tuple:
    """What changes while the flow moves: the rows it writes, the runs and their statuses."""
    runs = sorted((r.dagster_run.run_id, r.dagster_run.status.value) for r in instance.get_run_records())
    return tuple(_flow_state(engine, datetime.now(UTC).date()).values()), tuple(runs)


def _flowed_to_todays_snapshot(engine, instance: dg.DagsterInstance) -> dict | None:
    """The database's state once the items are in events and today's snapshot partition is materialized
    for every active trend; None before."""
    today = datetime.now(UTC).date()
    state = _flow_state(engine, today)
    snapshot_today = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("trend_snapshots"), asset_partitions=[today.isoformat()]),
        limit=1,
    ).records
    flowed = state["items"] and not state["items_without_event"] and state["snapshots_today"]
    return state if flowed and snapshot_today and state["snapshots_today"] == state["active_trends"] else None


def _started_by_the_platform(instance: dg.DagsterInstance, runs: list[dg.DagsterRun]) -> set[str]:
    """Who started ``runs``, asserting it was a sensor of the platform, a schedule or a backfill that the
    automation sensor requested (the backfill daemon's runs carry only the backfill's tag), never a person;
    declarative automation's runs are asset runs."""
    schedules = {f"schedule {schedule.name}" for schedule in defs.schedules or []}
    automation = {f"sensor {automation_sensor.name}", f"backfill of sensor {automation_sensor.name}"}
    origins = {run.run_id: run_origin(instance, run) for run in runs}
    assert set(origins.values()) <= {f"sensor {COLLECTION_SENSOR}", *automation, *schedules}, origins
    assert all(run.job_name == "__ASSET_JOB" for run in runs if origins[run.run_id] in automation)
    return set(origins.values())


def _collect(env: dict[str, str], tmp_path: Path) -> int:
    """``observatory collect`` of a small file: the collection run's id."""
    feed = tmp_path / "feed.jsonl"
    write_jsonl(feed, iter_items(ITEMS, seed=11))
    collected = subprocess.run(
        [sys.executable, "-m", "observatory_assets.cli", "collect", "--file", str(feed), "--source", "wire"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert collected.returncode == 0, collected.stderr
    return int(collected.stdout.split()[-1])


@pytest.mark.slow
def test_a_collected_file_flows_to_events_and_todays_trend_snapshot_with_no_job_started_by_hand(
    dagster_env, engine, tmp_path
):
    _collect(dagster_env, tmp_path)
    log_path = tmp_path / "daemon.log"
    daemon = start_daemon(dagster_env, log_path)
    try:
        with dg.DagsterInstance.from_config(dagster_env["DAGSTER_HOME"]) as instance:
            state = wait_while_it_moves(
                lambda: _flowed_to_todays_snapshot(engine, instance),
                lambda: _progress(engine, instance),
                daemon,
                log_path,
            )
            first_materialized = _first_materializations(instance)
            origins = _started_by_the_platform(instance, [r.dagster_run for r in instance.get_run_records()])
    finally:
        stop_daemon(daemon)

    assert state["items"] > 0 and state["active_trends"] > 0
    assert set(first_materialized) == set(FLOW)
    # the ingestion by collection_run_sensor, the rest by automation (its runs or its backfill's)
    assert f"sensor {COLLECTION_SENSOR}" in origins and len(origins) > 1, origins
    # each asset of the flow was first materialized after the one before it
    assert [first_materialized[name] for name in FLOW] == sorted(first_materialized.values()), first_materialized


@pytest.mark.slow
def test_a_run_loaded_from_the_dagster_cli_before_the_daemons_first_start_is_carried_on_when_it_starts(
    dagster_env, engine, tmp_path
):
    """A newcomer collects and loads first, and starts the daemon second: its first evaluation carries the
    loaded run on to its features, embeddings and events (eager() alone would never request them)."""
    run_id = _collect(dagster_env, tmp_path)
    loaded = subprocess.run(
        ["dagster", "asset", "materialize", "-m", "observatory_assets.definitions", "--select", "raw_items",
         "--partition", str(run_id)],
        env=dagster_env, cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert loaded.returncode == 0, loaded.stdout[-3000:] + loaded.stderr[-3000:]
    with dg.DagsterInstance.from_config(dagster_env["DAGSTER_HOME"]) as instance:
        by_hand = {r.dagster_run.run_id for r in instance.get_run_records()}
    assert len(by_hand) == 1  # the CLI's run: nothing else ran before the daemon

    log_path = tmp_path / "daemon.log"
    daemon = start_daemon(dagster_env, log_path)
    try:
        with dg.DagsterInstance.from_config(dagster_env["DAGSTER_HOME"]) as instance:
            events_of_the_run = dg.AssetRecordsFilter(asset_key=dg.AssetKey("events"))
            wait_while_it_moves(
                lambda: instance.fetch_materializations(events_of_the_run, limit=1).records,
                lambda: _progress(engine, instance),
                daemon,
                log_path,
            )
            runs = [r.dagster_run for r in instance.get_run_records() if r.dagster_run.run_id not in by_hand]
            origins = _started_by_the_platform(instance, runs)
            enriched = {
                name: instance.get_materialized_partitions(dg.AssetKey(name))
                for name in ("raw_items", "item_features", "item_embeddings")
            }
    finally:
        stop_daemon(daemon)

    assert enriched == {name: {str(run_id)} for name in enriched}
    assert origins & {f"sensor {automation_sensor.name}", f"backfill of sensor {automation_sensor.name}"}, origins
    assert _flow_state(engine, datetime.now(UTC).date())["items_without_event"] == 0


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
        today = datetime.now(UTC).date().isoformat()
        assert requested == {
            "item_features": {"1"}, "item_embeddings": {"1"}, "item_actors": {"1"}, "trend_evidence": {None},
            "volume_stats": {today}, "actor_network": {None},  # the analysis follows what exists, as the rest
        }  # fmt: skip


def test_a_flow_run_by_hand_before_the_first_evaluation_is_followed_once_on_the_first_tick():
    """Everything up to the events was materialized by hand (the embeddings after the events) before
    automation ever evaluated: the first tick runs the events once more (incremental: they take what they
    have not seen) and the trend evidence nobody derived; the next tick asks for nothing again."""
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(collection_run_partitions.name, ["1"])
        for asset, partition in (("raw_items", "1"), ("item_features", "1"), ("events", None), ("item_embeddings", "1")):  # fmt: skip
            instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=asset, partition=partition))
        keys = defs.resolve_asset_graph().get_all_asset_keys()
        tick = dg.evaluate_automation_conditions(defs=defs, instance=instance)
        requested = {
            k.to_user_string(): set(tick.get_requested_partitions(k)) for k in keys if tick.get_num_requested(k)
        }
        today = datetime.now(UTC).date().isoformat()
        assert requested == {
            "events": {None}, "trend_evidence": {None},
            "item_actors": {"1"}, "volume_stats": {today}, "actor_network": {None},  # never done yet: now
        }  # fmt: skip
        for asset in ("events", "trend_evidence"):
            instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=asset))
        tick = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=tick.cursor)
        assert "events" not in {k.to_user_string() for k in keys if tick.get_num_requested(k)}
