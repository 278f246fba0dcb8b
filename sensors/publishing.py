"""The takedown sensor: starts the takedown job as soon as a request is recorded, a deadline passes
(the deadline is in the database, so a restarted daemon still sweeps it) or a cancel needs restoring."""

import hashlib
import json

import dagster as dg

from observatory_assets.defs.publishing.jobs import takedown_job
from observatory_assets.defs.publishing.takedowns import due_takedowns
from resources import PostgresResource

IN_PROGRESS = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
               dg.DagsterRunStatus.STARTED]  # fmt: skip
#: Runs that ended without doing their work: the due state they were started for is still due.
ENDED_WITHOUT_SUCCESS = [dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED]
#: Seconds between evaluations: stage 1 starts within this (plus the run's start-up) of a request.
TAKEDOWN_SENSOR_INTERVAL_SECONDS = 5
#: Runs for one unchanged due state that may end without success before the sensor leaves it to a person.
MAX_RUNS_PER_DUE_STATE = 4
#: The tag that names the due state a run was started for.
DUE_STATE_TAG = "observatory/takedown-due-state"


def due_state_key(due: list[tuple[int, str, int]]) -> str:
    """A short fingerprint of what is due: a failed stage bumps its request's ``attempts``, which changes it."""
    return hashlib.sha256(json.dumps(due).encode()).hexdigest()[:20]


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
    # One run per due state and try: a run that died before it could bump `attempts` (killed, lost its
    # worker, failed to start) leaves the state unchanged, and the next try gets a new run key.
    state = due_state_key(due)
    ended = context.instance.get_run_records(
        dg.RunsFilter(job_name=takedown_job.name, tags={DUE_STATE_TAG: state}, statuses=ENDED_WITHOUT_SUCCESS),
        limit=MAX_RUNS_PER_DUE_STATE,
    )
    if len(ended) >= MAX_RUNS_PER_DUE_STATE:
        return dg.SkipReason(
            f"{len(ended)} takedown runs for the same due requests ended without success (last: "
            f"{ended[0].dagster_run.run_id}): see its logs, then `observatory takedown run`"
        )
    return dg.RunRequest(
        run_key=f"takedown-{state}-try-{len(ended)}",
        tags={"observatory/takedowns": ",".join(str(r[0]) for r in due), DUE_STATE_TAG: state},
    )
