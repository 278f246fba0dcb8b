"""collection_run_sensor against a real Dagster instance and a real database."""

import json

import dagster as dg
from sqlalchemy import text

from observatory_assets.definitions import defs
from observatory_assets.defs.ingestion.collect import SourceRequest, collect, create_collection_run, run_collection
from observatory_assets.defs.ingestion.jobs import CARRIED_ON_WITH_THE_LOAD
from observatory_assets.lib.dagster import collection_run_partitions
from sensors.collection_runs import collection_run_sensor
from tests.support.helpers import write

ITEM = '{"id": "%s", "title": "Item %s", "published_at": "2026-11-01T10:00:00Z"}\n'


def _tick(instance, resources, cursor=None) -> dg.SensorResult:
    context = dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources)
    return collection_run_sensor(context)


def _apply(instance, result: dg.SensorResult) -> None:
    """What the sensor daemon does with a result: add the partitions."""
    for request in result.dynamic_partitions_requests:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))


def test_one_run_per_completed_collection_run_and_nothing_for_pending(engine, store, resources, tmp_path):
    completed = [collect(engine, store, [SourceRequest("s", "jsonl", path=str(write(tmp_path / f"{i}.jsonl", ITEM % (i, i))))])
                 for i in range(2)]  # fmt: skip
    pending = create_collection_run(engine, [SourceRequest("s", "jsonl", path=str(tmp_path / "0.jsonl"))])
    with dg.DagsterInstance.ephemeral() as instance:
        result = _tick(instance, resources)
        assert [r.partition_key for r in result.run_requests] == [str(r) for r in completed]
        assert str(pending) not in {r.partition_key for r in result.run_requests}
        assert len({r.run_key for r in result.run_requests}) == 2
        assert set(result.dynamic_partitions_requests[0].partition_keys) == {str(r) for r in completed}
        assert json.loads(result.cursor)["completed_at"]
        _apply(instance, result)
        assert set(instance.get_dynamic_partitions(collection_run_partitions.name)) == {str(r) for r in completed}

        run_collection(engine, store, pending)  # the pending run completes later
        later = _tick(instance, resources, cursor=result.cursor)
        new_keys = {r.partition_key for r in later.run_requests}
        assert str(pending) in new_keys


def test_ingested_runs_are_not_requested_again_and_a_failed_ingestion_is_retried(engine, store, resources, tmp_path):
    """The sensor's run loads a collection run and carries it on to its events and the trend evidence in
    the same run; a load that failed is requested again, a loaded one never."""
    ok = collect(engine, store, [SourceRequest("s", "jsonl", path=str(write(tmp_path / "ok.jsonl", ITEM % (1, 1))))])
    broken = collect(engine, store, [SourceRequest("s", "jsonl", path=str(write(tmp_path / "b.jsonl", ITEM % (2, 2))))])
    with engine.connect() as conn:
        broken_key = conn.execute(
            text("SELECT payloads->0->>'key' FROM collection_runs WHERE id = :id"), {"id": broken}
        ).scalar()
    saved = (store.root / broken_key).read_bytes()
    (store.root / broken_key).unlink()  # the payload is missing: its ingestion fails for real

    job = defs.resolve_job_def(collection_run_sensor.job_name)
    with dg.DagsterInstance.ephemeral() as instance:
        first = _tick(instance, resources)
        _apply(instance, first)
        keys = {r.partition_key: r.run_key for r in first.run_requests}
        for partition in keys:
            result = job.execute_in_process(
                instance=instance,
                partition_key=partition,
                resources=resources,
                raise_on_error=False,
                tags={"dagster/partition": partition},
            )
            assert result.success == (partition == str(ok))
            materialized = {event.asset_key.to_user_string() for event in result.get_asset_materialization_events()}
            assert materialized == ({"raw_items", *CARRIED_ON_WITH_THE_LOAD} if result.success else set())

        retry = _tick(instance, resources, cursor=first.cursor)
        assert [r.partition_key for r in retry.run_requests] == [str(broken)]  # the ingested run is done
        assert retry.run_requests[0].run_key != keys[str(broken)]  # a new key, so Dagster launches it

        (store.root / broken_key).write_bytes(saved)
        assert job.execute_in_process(instance=instance, partition_key=str(broken), resources=resources).success
        done = _tick(instance, resources, cursor=retry.cursor)
        assert done.run_requests == [] and done.skip_reason


def test_a_failed_collection_run_is_ignored_until_it_is_collected_again(engine, store, resources, tmp_path):
    missing = tmp_path / "later.jsonl"
    run_id = create_collection_run(engine, [SourceRequest("s", "jsonl", path=str(missing))])
    try:
        run_collection(engine, store, run_id)
    except FileNotFoundError:
        pass
    with engine.connect() as conn:
        assert (
            conn.execute(text("SELECT status FROM collection_runs WHERE id = :id"), {"id": run_id}).scalar() == "failed"
        )
    with dg.DagsterInstance.ephemeral() as instance:
        assert _tick(instance, resources).run_requests == []
        write(missing, ITEM % (1, 1))
        run_collection(engine, store, run_id)  # retrying the collection completes it
        assert [r.partition_key for r in _tick(instance, resources).run_requests] == [str(run_id)]


def test_runs_waiting_before_the_cursor_never_starve_newer_ones(engine, store, resources, tmp_path):
    with engine.begin() as conn:  # 250 runs already requested (behind the cursor) and still waiting
        conn.execute(
            text(
                "INSERT INTO collection_runs (status, completed_at) "
                "SELECT 'completed', now() - interval '1 hour' + n * interval '1 second' FROM generate_series(1, 250) n"
            )
        )
        last = conn.execute(text("SELECT id, completed_at FROM collection_runs ORDER BY id DESC LIMIT 1")).one()
        conn.execute(text("UPDATE collection_runs SET ingest_abandoned_at = now() WHERE id <= 10"))
    cursor = json.dumps({"completed_at": last.completed_at.isoformat(), "id": last.id})
    newer = collect(engine, store, [SourceRequest("s", "jsonl", path=str(write(tmp_path / "n.jsonl", ITEM % (1, 1))))])
    with dg.DagsterInstance.ephemeral() as instance:
        result = _tick(instance, resources, cursor=cursor)
    requested = [int(r.partition_key) for r in result.run_requests]
    assert newer in requested and all(run_id > 10 for run_id in requested)
    assert json.loads(result.cursor) == {"completed_at": json.loads(result.cursor)["completed_at"], "id": newer}
