"""``collection_run_sensor``: one ingestion run for every newly completed collection run."""

from __future__ import annotations

import json
from datetime import datetime

import dagster as dg
from sqlalchemy import text

from observatory_assets.defs.ingestion.assets import ingest_job
from observatory_assets.lib.dagster import collection_run_partitions
from resources import PostgresResource

MAX_RUNS_PER_TICK = 200
#: Failed ingestion runs of one collection run that the sensor retries before leaving it to a person.
MAX_INGEST_RETRIES = 3

WAITING_FOR_INGESTION = """
SELECT id, completed_at
  FROM collection_runs
 WHERE status = 'completed' AND ingested_at IS NULL
 ORDER BY completed_at, id
 LIMIT :limit
"""


def ingestion_run_key(run_id: int, failed_attempts: int) -> str:
    """The run key of the next ingestion run for a collection run: it changes only when an
    earlier ingestion run failed, so a failure can be retried but a success is never repeated."""
    return f"collection-run-{run_id}-try-{failed_attempts}"


def _ingestion_history(instance: dg.DagsterInstance, partition_key: str) -> tuple[bool, int]:
    """(an ingestion run of this partition is queued or running, how many have failed)."""
    runs = instance.get_runs(filters=dg.RunsFilter(job_name=ingest_job.name, tags={"dagster/partition": partition_key}))
    in_flight = any(not run.is_finished for run in runs)
    failed = sum(1 for run in runs if run.status == dg.DagsterRunStatus.FAILURE)
    return in_flight, failed


@dg.sensor(
    job=ingest_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Requests an ingestion run (a raw_items partition) for each completed collection run that is "
        "not ingested yet, and retries one whose ingestion failed (up to 3 times)."
    ),
)
def collection_run_sensor(context: dg.SensorEvaluationContext, postgres: PostgresResource) -> dg.SensorResult:
    # The cursor is the newest completion already seen: runs completed after it are new and
    # requested at once; older runs still waiting were requested before, so their Dagster
    # history decides whether a failed ingestion is retried.
    cursor = json.loads(context.cursor) if context.cursor else {}
    seen_until = datetime.fromisoformat(cursor["completed_at"]) if cursor else None
    with postgres.get_engine().connect() as conn:
        waiting = conn.execute(text(WAITING_FOR_INGESTION), {"limit": MAX_RUNS_PER_TICK}).all()

    requests, new_partitions = [], []
    for run in waiting:
        key = str(run.id)
        if seen_until is None or run.completed_at > seen_until:
            failed = 0
        else:
            in_flight, failed = _ingestion_history(context.instance, key)
            if in_flight or failed > MAX_INGEST_RETRIES:
                continue
        if not context.instance.has_dynamic_partition(collection_run_partitions.name, key):
            new_partitions.append(key)
        requests.append(dg.RunRequest(partition_key=key, run_key=ingestion_run_key(run.id, failed)))

    newest = max([run.completed_at for run in waiting] + ([seen_until] if seen_until else []), default=None)
    return dg.SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=[collection_run_partitions.build_add_request(new_partitions)]
        if new_partitions
        else [],
        cursor=json.dumps({"completed_at": newest.isoformat()}) if newest else context.cursor,
        skip_reason=None if requests else "no collection runs waiting for ingestion",
    )
