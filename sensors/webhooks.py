"""The webhook delivery sensor: starts the delivery job when outbox messages are due (new ones, or
retries whose time has come; the schedule is in the database, so a restarted daemon still finds them)."""

import dagster as dg

from observatory_assets.defs.webhooks.delivery import due_messages
from observatory_assets.defs.webhooks.jobs import deliver_webhooks
from resources import PostgresResource

IN_PROGRESS = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
               dg.DagsterRunStatus.STARTED]  # fmt: skip
WEBHOOK_SENSOR_INTERVAL_SECONDS = 5


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
    in_progress = context.instance.get_run_records(
        dg.RunsFilter(job_name=deliver_webhooks.name, statuses=IN_PROGRESS), limit=1
    )
    if in_progress:  # one delivery run at a time; what stays due is picked up on a later tick
        return dg.SkipReason(f"delivery run {in_progress[0].dagster_run.run_id} is still in progress")
    tick = int(context.cursor or 0) + 1
    context.update_cursor(str(tick))
    return dg.RunRequest(run_key=f"webhooks-{tick}-{state}", tags={"observatory/webhooks_due": str(due)})
