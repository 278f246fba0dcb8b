"""Faults with real parts: the embedded PostgreSQL stopped and started under an ingestion run, the
sensor's run racing an `observatory ingest` of the same collection run, and twenty collection runs
queued at once through a real `dagster-daemon` with the ingest pool limited."""

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import dagster as dg
import pytest
import yaml
from sqlalchemy import text

from observatory_assets.defs.ingestion.assets import raw_items
from observatory_assets.defs.ingestion.collect import SourceRequest, collect
from observatory_assets.defs.ingestion.demo_data import iter_items, write_jsonl
from observatory_assets.lib import migrations
from observatory_assets.lib.dagster import collection_run_partitions
from resources import ObjectStoreResource, PostgresResource
from resources.embedded import (
    INGEST_POOL_LIMIT,
    database_url_in,
    ensure_database,
    start_embedded_postgres,
    stop_embedded_postgres,
)
from resources.object_store import LocalObjectStore
from resources.postgres import engine_for
from sensors.collection_runs import collection_run_sensor
from tests.conftest import ROOT

LOADED = "SELECT (SELECT count(*) FROM raw_items), (SELECT count(*) FROM item_duplicates), (SELECT count(*) FROM rejected_items)"


def _outcomes(engine, run_id: int):
    with engine.connect() as conn:
        row = conn.execute(
            text("SELECT items_collected, items_loaded, items_duplicate, items_rejected, ingested_at IS NOT NULL "
                 "FROM collection_runs WHERE id = :id"), {"id": run_id}
        ).one()  # fmt: skip
        return tuple(row), tuple(conn.execute(text(LOADED)).one())


def _wait_for_the_load_lock(engine, run_id: int, loader) -> None:
    """Return once a load of ``run_id`` holds its advisory lock (is mid-transaction); ``loader`` must live."""
    deadline = time.monotonic() + 120
    with engine.connect() as conn:
        while not conn.execute(text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = :id "
                                    "AND granted"), {"id": run_id}).scalar_one():  # fmt: skip
            alive = loader.is_alive() if hasattr(loader, "is_alive") else loader.poll() is None
            assert alive, "the load ended before it was seen running" + (
                "" if hasattr(loader, "is_alive") else "".join(loader.communicate())
            )
            assert time.monotonic() < deadline
            time.sleep(0.02)


def _materialize(instance, resources, run_id: int) -> dg.ExecuteInProcessResult:
    return dg.materialize([raw_items], instance=instance, resources=resources, partition_key=str(run_id),
                          raise_on_error=False)  # fmt: skip


def test_postgres_stopped_and_started_under_an_ingestion_run(tmp_path):
    pgdata = tmp_path / "pgdata"  # a server of its own: the session's serves the other tests
    server = start_embedded_postgres(pgdata)
    try:
        ensure_database(server, "faults")
        url = database_url_in(server, "faults")
        migrations.upgrade(url)
        engine, store = engine_for(url), LocalObjectStore(tmp_path / "objects")
        payload = tmp_path / "big.jsonl"
        write_jsonl(payload, iter_items(30_000, seed=3))
        run_id = collect(engine, store, [SourceRequest("big", "jsonl", path=str(payload))])
        resources = {
            "postgres": PostgresResource(url=url),
            "object_store": ObjectStoreResource(local_root=str(store.root)),
        }
        with dg.DagsterInstance.ephemeral() as instance:
            instance.add_dynamic_partitions(collection_run_partitions.name, [str(run_id)])
            outcome: list[dg.ExecuteInProcessResult] = []
            worker = threading.Thread(target=lambda: outcome.append(_materialize(instance, resources, run_id)))
            worker.start()
            _wait_for_the_load_lock(engine, run_id, worker)
            time.sleep(0.3)
            stop_embedded_postgres(pgdata)
            worker.join(120)
            assert outcome and not outcome[0].success  # the run failed, and said so
            failure = outcome[0].get_step_failure_events()[0].step_failure_data.error
            assert "connection" in (failure.cause or failure).message.lower()

            start_embedded_postgres(pgdata)
            (collected, *_), rows = _outcomes(engine, run_id)
            assert rows == (0, 0, 0)  # nothing of the broken load was committed
            retry = _materialize(instance, resources, run_id)
            assert retry.success
            counts, rows = _outcomes(engine, run_id)
            assert counts[4] and counts[0] == 30_000 and sum(counts[1:4]) == 30_000
            assert rows == counts[1:4]  # exactly one clean load
    finally:
        engine_for(database_url_in(server, "faults")).dispose()
        stop_embedded_postgres(pgdata)


def test_the_sensors_run_and_observatory_ingest_of_the_same_run_at_once(dagster_env, database_url, tmp_path):
    engine = engine_for(database_url)
    store = LocalObjectStore(tmp_path / "objects")  # dagster_env's OBSERVATORY_HOME/objects
    payload = tmp_path / "race.jsonl"
    write_jsonl(payload, iter_items(20_000, seed=5))
    run_id = collect(engine, store, [SourceRequest("race", "jsonl", path=str(payload))])
    resources = {
        "postgres": PostgresResource(url=database_url),
        "object_store": ObjectStoreResource(local_root=str(store.root)),
    }

    with dg.DagsterInstance.ephemeral() as instance:
        context = dg.build_sensor_context(instance=instance, resources={"postgres": resources["postgres"]})
        result = collection_run_sensor(context)
        [request] = result.run_requests
        instance.add_dynamic_partitions(collection_run_partitions.name, [request.partition_key])
        cli = subprocess.Popen(["observatory", "ingest", "--run", str(run_id)], cwd=ROOT, env=dagster_env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
        _wait_for_the_load_lock(engine, run_id, cli)  # the CLI's load is in its transaction now
        by_sensor = dg.materialize([raw_items], instance=instance, resources=resources,
                                   partition_key=request.partition_key, tags=request.tags)  # fmt: skip
        out, err = cli.communicate(timeout=300)
    assert by_sensor.success and cli.returncode == 0, out + err
    assert err.strip() == "" and f"collection run {run_id}: ok" in out
    counts, rows = _outcomes(engine, run_id)
    assert counts[0] == 20_000 and sum(counts[1:4]) == 20_000 and rows == counts[1:4]  # one load


def _max_overlap(spans: list[tuple[float, float]]) -> int:
    """The most spans open at one moment."""
    edges = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans], key=lambda e: (e[0], e[1]))
    open_now = peak = 0
    for _, step in edges:
        open_now += step
        peak = max(peak, open_now)
    return peak


def test_twenty_collection_runs_queued_at_once_through_the_daemon_respect_the_ingest_pool(
    dagster_env, database_url, tmp_path
):
    engine = engine_for(database_url)
    store = LocalObjectStore(tmp_path / "objects")  # dagster_env's OBSERVATORY_HOME/objects
    run_ids = []
    for n in range(20):
        payload = tmp_path / f"feed-{n}.jsonl"
        write_jsonl(payload, iter_items(50, seed=100 + n))
        run_ids.append(collect(engine, store, [SourceRequest(f"feed-{n}", "jsonl", path=str(payload))]))
    home = Path(dagster_env["DAGSTER_HOME"])
    config = yaml.safe_load((home / "dagster.yaml").read_text())
    assert config["concurrency"]["pools"]["default_limit"] == INGEST_POOL_LIMIT  # as every embedded instance has
    # only the ingestion runs here: the enrichment sensors' runs stay queued
    config["concurrency"]["runs"]["tag_concurrency_limits"] = [
        {"key": "dagster/sensor_name", "value": name, "limit": 0}
        for name in ("enrich_after_ingest", "events_after_enrichment")
    ]
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))

    log = open(tmp_path / "daemon.log", "wb")
    daemon = subprocess.Popen(["dagster-daemon", "run", "-m", "observatory_assets.definitions"], cwd=ROOT,
                              env=dagster_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("DAGSTER_HOME", str(home))
            with dg.DagsterInstance.get() as instance:
                deadline = time.monotonic() + 300
                while True:
                    runs = instance.get_runs(filters=dg.RunsFilter(job_name="ingest_collection_run"))
                    if len(runs) >= 20 and all(r.is_finished for r in runs):
                        break
                    assert daemon.poll() is None, (tmp_path / "daemon.log").read_text()[-3000:]
                    assert time.monotonic() < deadline, f"{len(runs)} runs: {[r.status for r in runs]}"
                    time.sleep(1)
                spans = []
                for run in runs:
                    events = instance.all_logs(run.run_id, of_type={dg.DagsterEventType.STEP_START,
                                                                    dg.DagsterEventType.STEP_SUCCESS})  # fmt: skip
                    times = {e.dagster_event.event_type: e.timestamp for e in events if e.step_key == "raw_items"}
                    spans.append((times[dg.DagsterEventType.STEP_START], times[dg.DagsterEventType.STEP_SUCCESS]))
    finally:
        os.killpg(daemon.pid, signal.SIGTERM)
        daemon.wait(60)
        log.close()
    assert sorted(int(r.tags["dagster/partition"]) for r in runs) == run_ids  # each run once, none missing
    assert {r.status for r in runs} == {dg.DagsterRunStatus.SUCCESS}
    assert 1 <= _max_overlap(spans) <= INGEST_POOL_LIMIT
    with engine.connect() as conn:
        counts = conn.execute(text(
            "SELECT count(*) FILTER (WHERE ingested_at IS NOT NULL), sum(items_collected), "
            "sum(items_loaded + items_duplicate + items_rejected) FROM collection_runs"
        )).one()  # fmt: skip
    assert tuple(counts) == (20, 1000, 1000)
