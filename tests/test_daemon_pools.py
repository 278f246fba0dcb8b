"""Eight collection runs queued at once through a real ``dagster-daemon``: the sensor requests them in
one tick, the run queue launches them (twice as many as it runs at once, so some wait in the queue), and
the ``observatory_ingest`` pool lets no more than its limit of ``raw_items`` steps run at the same time.
Everything is read back from the instance's event log."""

import subprocess
import time
from pathlib import Path

import dagster as dg
import pytest
import yaml
from sqlalchemy import text

from observatory_assets.defs.ingestion.assets import raw_items
from observatory_assets.defs.ingestion.collect import SourceRequest, collect
from observatory_assets.defs.ingestion.demo_data import iter_items, write_jsonl
from observatory_assets.defs.ingestion.jobs import ingest_to_events_job
from resources.embedded import INGEST_POOL_LIMIT
from resources.object_store import LocalObjectStore
from resources.postgres import engine_for
from sensors.automation import automation_sensor
from tests.support.daemon import start_daemon, stop_daemon

#: Twice the runs the queue lets run at once: as many runs in flight as allowed, and more waiting behind them.
COLLECTION_RUNS = 8
ITEMS_PER_RUN = 5
INGEST_POOL = raw_items.op.pool
#: Seconds after which the daemon is taken for stuck (a guard against hanging, not a speed target).
STUCK_AFTER_SECONDS = 600


def _tuned_for_this_test(home: Path) -> None:
    """The embedded instance's dagster.yaml (same pool limit, same run limit, same queue: checked every
    second, launches in threads), tuned for contention: the queue may start runs beyond
    the pool's free slots (a buffer of ``max_concurrent_runs`` - limit), so the steps' own slot claims
    are put to work, not only the queue's check of the pool; and the runs automation requests after each
    ingestion stay queued (limit 0), so the cores go to the runs under test (the flow after ingestion
    has its own daemon test: test_daemon_automation.py)."""
    config_path = home / "dagster.yaml"
    config = yaml.safe_load(config_path.read_text())
    runs, pools = config["concurrency"]["runs"], config["concurrency"]["pools"]
    pools["op_granularity_run_buffer"] = runs["max_concurrent_runs"] - pools["default_limit"]
    runs["tag_concurrency_limits"] = [{"key": "dagster/sensor_name", "value": automation_sensor.name, "limit": 0}]
    config_path.write_text(yaml.safe_dump(config))


def _wait_for_ingestion_runs(instance: dg.DagsterInstance, daemon: subprocess.Popen, log_path: Path) -> list:
    """The ingestion runs' records once ``COLLECTION_RUNS`` of them have finished (and none is in flight)."""
    deadline = time.monotonic() + STUCK_AFTER_SECONDS
    while True:
        records = instance.get_run_records(dg.RunsFilter(job_name=ingest_to_events_job.name))
        if len(records) >= COLLECTION_RUNS and all(r.dagster_run.is_finished for r in records):
            return records
        assert daemon.poll() is None, "the daemon exited:\n" + log_path.read_text()[-3000:]
        statuses = sorted(r.dagster_run.status.value for r in records)
        assert time.monotonic() < deadline, f"{len(records)} runs: {statuses}\n" + log_path.read_text()[-3000:]
        time.sleep(1)


def _step_spans(instance: dg.DagsterInstance, run_id: str, step_key: str) -> list[tuple[float, float]]:
    """(start, end) of each attempt of ``step_key`` in the run, from its STEP_START and the event that ended it."""
    ends = {dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE, dg.DagsterEventType.STEP_UP_FOR_RETRY}
    events = instance.all_logs(run_id, of_type={dg.DagsterEventType.STEP_START, *ends})
    spans, started = [], None
    for event in sorted((e for e in events if e.step_key == step_key), key=lambda e: e.timestamp):
        if event.dagster_event.event_type == dg.DagsterEventType.STEP_START:
            started = event.timestamp
        else:
            spans.append((started, event.timestamp))
            started = None
    assert started is None, f"run {run_id}: {step_key} started and never ended"
    return spans


def _most_at_once(spans: list[tuple[float, float]]) -> int:
    """The most spans open at one moment (a span ending exactly when another starts does not overlap it)."""
    edges = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    open_now = peak = 0
    for _, change in edges:
        open_now += change
        peak = max(peak, open_now)
    return peak


@pytest.mark.slow
def test_eight_collection_runs_queued_at_once_through_the_daemon_keep_to_the_ingest_pool(
    dagster_env, database_url, tmp_path
):
    engine = engine_for(database_url)
    store = LocalObjectStore(tmp_path / "objects")  # dagster_env's OBSERVATORY_HOME/objects
    collection_runs = []
    for n in range(COLLECTION_RUNS):
        payload = tmp_path / f"feed-{n}.jsonl"
        write_jsonl(payload, iter_items(ITEMS_PER_RUN, seed=100 + n))
        collection_runs.append(collect(engine, store, [SourceRequest(f"feed-{n}", "jsonl", path=str(payload))]))
    home = Path(dagster_env["DAGSTER_HOME"])
    _tuned_for_this_test(home)
    config = yaml.safe_load((home / "dagster.yaml").read_text())
    assert config["concurrency"]["pools"]["default_limit"] == INGEST_POOL_LIMIT  # as every embedded instance
    # more runs may run at once than the pool has slots: only the pool can hold the steps to its limit
    assert config["concurrency"]["runs"]["max_concurrent_runs"] > INGEST_POOL_LIMIT
    assert COLLECTION_RUNS >= 2 * config["concurrency"]["runs"]["max_concurrent_runs"]  # and the queue holds some

    log_path = tmp_path / "daemon.log"
    daemon = start_daemon(dagster_env, log_path)
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("DAGSTER_HOME", str(home))
            with dg.DagsterInstance.get() as instance:
                records = _wait_for_ingestion_runs(instance, daemon, log_path)
                spans = {r.dagster_run.run_id: _step_spans(instance, r.dagster_run.run_id, "raw_items")
                         for r in records}  # fmt: skip
                pool = instance.event_log_storage.get_concurrency_info(INGEST_POOL)
                materialized = instance.fetch_materializations(raw_items.key, limit=10 * COLLECTION_RUNS).records
    finally:
        stop_daemon(daemon)

    runs = [r.dagster_run for r in records]
    assert sorted(int(run.tags["dagster/partition"]) for run in runs) == collection_runs  # each once, none missing
    assert {run.status for run in runs} == {dg.DagsterRunStatus.SUCCESS}
    # a step retried under load (the asset's RetryPolicy) still holds a slot each time: every attempt counts
    all_spans = [span for attempts in spans.values() for span in attempts]
    assert 1 <= _most_at_once(all_spans) <= INGEST_POOL_LIMIT, sorted(all_spans)
    # the pool had the limit as its slots, and every claim was given back
    assert (pool.slot_count, pool.claimed_slots, pool.pending_steps) == (INGEST_POOL_LIMIT, [], [])

    # each collection run was loaded once, by one materialization that found nothing loaded before it
    assert sorted(int(m.partition_key) for m in materialized) == collection_runs
    assert not any(m.asset_materialization.metadata["already_loaded"].value for m in materialized)
    with engine.connect() as conn:
        per_run = conn.execute(
            text("SELECT c.ingested_at IS NOT NULL, c.items_collected, c.items_loaded + c.items_duplicate + "
                 "c.items_rejected, c.items_loaded, (SELECT count(*) FROM raw_items r WHERE r.collection_run_id = c.id) "
                 "FROM collection_runs c ORDER BY c.id")
        ).all()  # fmt: skip
        distinct_keys = conn.execute(text("SELECT count(DISTINCT (source_id, external_id)) FROM raw_items")).scalar()
    assert [(ingested, collected, accounted) for ingested, collected, accounted, _, _ in per_run] == [
        (True, ITEMS_PER_RUN, ITEMS_PER_RUN)
    ] * COLLECTION_RUNS
    assert [loaded for *_, loaded, _ in per_run] == [rows for *_, rows in per_run]
    assert distinct_keys == sum(rows for *_, rows in per_run) > 0
