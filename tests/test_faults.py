"""Faults with real parts: the embedded PostgreSQL stopped and started under an ingestion run, the
sensor's run racing an `observatory ingest` of the same collection run."""

import subprocess
import threading
import time

import dagster as dg
from sqlalchemy import text

from observatory_assets.defs.ingestion.assets import raw_items
from observatory_assets.defs.ingestion.collect import SourceRequest, collect
from observatory_assets.defs.ingestion.demo_data import iter_items, write_jsonl
from observatory_assets.lib import migrations
from observatory_assets.lib.dagster import collection_run_partitions
from resources import ObjectStoreResource, PostgresResource
from resources.embedded import (
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
