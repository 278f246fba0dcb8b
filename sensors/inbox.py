"""``inbox_sensor``: every object dropped under ``inbox/<source>/`` in object storage is taken once."""

from __future__ import annotations

import json

import dagster as dg

from observatory_assets.defs.ingestion.inbox import origin_of, waiting_objects
from observatory_assets.defs.ingestion.jobs import inbox_job
from resources import ObjectStoreResource

MAX_DROPS_PER_TICK = 200
#: Failed inbox jobs of one drop that the sensor starts again (each already retried its step) before
#: leaving the drop, still in the inbox, to a person.
MAX_JOB_RETRIES = 3
INBOX_KEY_TAG = "observatory/inbox_key"


def _job_history(instance: dg.DagsterInstance, key: str) -> tuple[bool, int]:
    """(an inbox job for this key is queued or running, how many have failed)."""
    runs = instance.get_runs(filters=dg.RunsFilter(job_name=inbox_job.name, tags={INBOX_KEY_TAG: key}))
    return any(not run.is_finished for run in runs), sum(run.status == dg.DagsterRunStatus.FAILURE for run in runs)


def _take_request(key: str, etag: str, failed_attempts: int) -> dg.RunRequest:
    retry = f"#try-{failed_attempts}" if failed_attempts else ""
    return dg.RunRequest(
        run_key=origin_of(key, etag) + retry,
        run_config={"ops": {"take_inbox_drop": {"config": {"key": key, "etag": etag}}}},
        tags={INBOX_KEY_TAG: key},
    )


@dg.sensor(
    job=inbox_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Starts inbox_job for each object dropped under inbox/<source>/ in object storage: it becomes a "
        "collection run (the format from its extension; an unknown one a failed run with its reason) and "
        "moves to inbox/processed/<date>/."
    ),
)
def inbox_sensor(context: dg.SensorEvaluationContext, object_store: ObjectStoreResource) -> dg.SensorResult:
    # The cursor maps each key requested and still in the inbox to the ETag it had: the same drop is
    # requested once, a file dropped again under the same name (a new ETag) is a new drop. A requested
    # drop still waiting whose job failed for good is requested again, up to MAX_JOB_RETRIES times.
    requested: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    waiting = list(waiting_objects(object_store.get_store()))
    new = [entry for entry in waiting if requested.get(entry.key) != entry.etag][:MAX_DROPS_PER_TICK]
    retries = []
    for entry in waiting:
        if requested.get(entry.key) == entry.etag:
            in_flight, failed = _job_history(context.instance, entry.key)
            if not in_flight and 0 < failed <= MAX_JOB_RETRIES:
                retries.append(_take_request(entry.key, entry.etag, failed))
    still_waiting = {entry.key: requested[entry.key] for entry in waiting if entry.key in requested}
    run_requests = [_take_request(entry.key, entry.etag, 0) for entry in new] + retries
    return dg.SensorResult(
        run_requests=run_requests,
        cursor=json.dumps(still_waiting | {entry.key: entry.etag for entry in new}, sort_keys=True),
        skip_reason=None if run_requests else f"no new objects in the inbox ({len(waiting)} already requested)",
    )
