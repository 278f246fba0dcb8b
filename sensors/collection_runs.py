"""``collection_run_sensor``: one ingestion run for every newly completed collection run.

The sensor walks completed runs with a keyset cursor (completion time, id): runs after it are new;
runs before it still waiting are retried from their Dagster history, and one whose ingestion failed
for good is marked abandoned (``ingest_abandoned_at``), so it never takes a place in either window.
"""

from __future__ import annotations

import json

import dagster as dg

from observatory_assets.defs.ingestion.collect import (
    START,
    abandon_ingestion,
    runs_waiting_after,
    runs_waiting_up_to,
)
from observatory_assets.defs.ingestion.jobs import ingest_job, ingest_to_events_job
from observatory_assets.lib.dagster import collection_run_partitions
from resources import PostgresResource

MAX_RUNS_PER_TICK = 200
#: Seconds between ticks: a completed collection run waits at most this long for its ingestion run.
COLLECTION_RUN_SENSOR_INTERVAL_SECONDS = 5
#: Failed ingestion runs of one collection run that the sensor retries before leaving it to a person.
MAX_INGEST_RETRIES = 3


def ingestion_run_key(run_id: int, failed_attempts: int) -> str:
    """The run key of the next ingestion run for a collection run: it changes only when an
    earlier ingestion run failed, so a failure can be retried but a success is never repeated."""
    return f"collection-run-{run_id}-try-{failed_attempts}"


def _ingestion_history(instance: dg.DagsterInstance, partition_key: str) -> tuple[bool, int]:
    """(an ingestion run of this partition is queued or running, how many have failed)."""
    runs = [
        run
        for run in instance.get_runs(filters=dg.RunsFilter(tags={"dagster/partition": partition_key}))
        if run.job_name in (ingest_to_events_job.name, ingest_job.name)  # the sensor's, or a person's load
    ]
    in_flight = any(not run.is_finished for run in runs)
    failed = sum(1 for run in runs if run.status == dg.DagsterRunStatus.FAILURE)
    return in_flight, failed


@dg.sensor(
    job=ingest_to_events_job,
    minimum_interval_seconds=COLLECTION_RUN_SENSOR_INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Requests an ingestion run (a raw_items partition, carried on to its events in the same run) for "
        "each completed collection run that is not ingested yet, and retries one whose ingestion failed "
        "(up to 3 times)."
    ),
)
def collection_run_sensor(context: dg.SensorEvaluationContext, postgres: PostgresResource) -> dg.SensorResult:
    # The cursor is the last (completion, id) requested: runs after it are new and requested at
    # once; runs at or before it still waiting were requested before, so their Dagster history
    # decides whether a failed ingestion is retried or given up.
    cursor = json.loads(context.cursor) if context.cursor else {}
    position = (cursor.get("completed_at", START[0]), cursor.get("id", 2**62 if cursor else START[1]))
    with postgres.get_engine().begin() as conn:
        earlier = runs_waiting_up_to(conn, position, MAX_RUNS_PER_TICK)
        new = runs_waiting_after(conn, position, MAX_RUNS_PER_TICK)
        requests, new_partitions, abandoned = [], [], []
        for run, is_new in [(run, False) for run in earlier] + [(run, True) for run in new]:
            key = str(run.id)
            failed = 0
            if not is_new:
                in_flight, failed = _ingestion_history(context.instance, key)
                if failed > MAX_INGEST_RETRIES:
                    abandoned.append(run.id)
                if in_flight or failed > MAX_INGEST_RETRIES:
                    continue
            if not context.instance.has_dynamic_partition(collection_run_partitions.name, key):
                new_partitions.append(key)
            requests.append(dg.RunRequest(partition_key=key, run_key=ingestion_run_key(run.id, failed)))
        if abandoned:
            abandon_ingestion(conn, abandoned)

    last = new[-1] if new else None
    return dg.SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=[collection_run_partitions.build_add_request(new_partitions)]
        if new_partitions
        else [],
        cursor=json.dumps({"completed_at": last.completed_at.isoformat(), "id": last.id}) if last else context.cursor,
        skip_reason=None if requests else "no collection runs waiting for ingestion",
    )
