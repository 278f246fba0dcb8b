"""The webhook delivery sensor: starts the delivery job when outbox messages are due (new ones, or
retries whose time has come; the schedule is in the database, so a restarted daemon still finds them).

One delivery run at a time, but never a run that stopped answering: a run still marked in progress
after :data:`STALE_RUN_AFTER` (its process killed, and run monitoring not on, or not yet acting) no
longer holds delivery back. Two delivery runs at once are safe (each leases the messages it sends),
so a run wrongly thought dead costs nothing but a second cycle."""

import time

import dagster as dg

from observatory_assets.defs.webhooks.delivery import due_messages
from observatory_assets.defs.webhooks.jobs import deliver_webhooks
from resources import PostgresResource

IN_PROGRESS = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
               dg.DagsterRunStatus.STARTED]  # fmt: skip
WEBHOOK_SENSOR_INTERVAL_SECONDS = 5
#: How long a delivery run may stay in progress before the sensor stops waiting for it.
STALE_RUN_AFTER_SECONDS = 15 * 60


def blocking_run(instance: dg.DagsterInstance, now: float) -> str | None:
    """The id of a delivery run in progress that started (or was queued) less than
    :data:`STALE_RUN_AFTER_SECONDS` ago, or None."""
    records = instance.get_run_records(dg.RunsFilter(job_name=deliver_webhooks.name, statuses=IN_PROGRESS), limit=20)
    for record in records:
        since = record.start_time or record.create_timestamp.timestamp()
        if now - since < STALE_RUN_AFTER_SECONDS:
            return record.dagster_run.run_id
    return None


@dg.sensor(
    job=deliver_webhooks,
    minimum_interval_seconds=WEBHOOK_SENSOR_INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Starts the webhook delivery job when outbox messages are due.",
)
def webhook_delivery_sensor(context: dg.SensorEvaluationContext, postgres: PostgresResource):
    with postgres.get_engine().connect() as conn:
        due, state = due_messages(conn)
    if not due:
        return dg.SkipReason("no webhook message is due")
    in_progress = blocking_run(context.instance, time.time())
    if in_progress:  # one delivery run at a time; what stays due is picked up on a later tick
        return dg.SkipReason(f"delivery run {in_progress} is still in progress")
    tick = int(context.cursor or 0) + 1
    context.update_cursor(str(tick))
    return dg.RunRequest(run_key=f"webhooks-{tick}-{state}", tags={"observatory/webhooks_due": str(due)})
