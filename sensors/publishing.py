"""The takedown sensor: starts the takedown job as soon as a request is recorded, a deadline passes
(the deadline is in the database, so a restarted daemon still sweeps it) or a cancel needs restoring."""

import hashlib
import json

import dagster as dg

from observatory_assets.defs.publishing.assets import takedown_job
from observatory_assets.defs.publishing.takedowns import due_takedowns
from resources import PostgresResource

IN_PROGRESS = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
               dg.DagsterRunStatus.STARTED]  # fmt: skip
#: Seconds between evaluations: stage 1 starts within this (plus the run's start-up) of a request.
TAKEDOWN_SENSOR_INTERVAL_SECONDS = 5


@dg.sensor(
    job=takedown_job,
    minimum_interval_seconds=TAKEDOWN_SENSOR_INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Starts the takedown job for pending requests, passed deadlines and cancels to restore.",
)
def takedown_sensor(context: dg.SensorEvaluationContext, postgres: PostgresResource):
    due = due_takedowns(postgres.get_engine())
    if not due:
        return dg.SkipReason("no takedown stage is due")
    in_progress = context.instance.get_run_records(
        dg.RunsFilter(job_name=takedown_job.name, statuses=IN_PROGRESS), limit=1
    )
    if in_progress:  # one takedown run at a time; what it leaves due is picked up on a later tick
        return dg.SkipReason(f"takedown run {in_progress[0].dagster_run.run_id} is still in progress")
    # one run per distinct due state: a failed attempt bumps `attempts`, so its retry gets a new key
    state = json.dumps(due)
    context.update_cursor(state)
    run_key = "takedown-" + hashlib.sha256(state.encode()).hexdigest()[:20]
    return dg.RunRequest(run_key=run_key, tags={"observatory/takedowns": ",".join(str(r[0]) for r in due)})
