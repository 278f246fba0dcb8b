"""Webhooks in Dagster: the delivery job (started by ``webhook_delivery_sensor`` when messages are due, or
by ``observatory webhooks deliver``) and the daily pruning of the 7-day delivery log."""

import dagster as dg

from observatory_assets.defs.webhooks.delivery import deliver_due, prune
from observatory_assets.lib.dagster import utc_schedule
from resources import ObjectStoreResource, PostgresResource


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 1) if ordered else 0.0


@dg.op(description="Sends every due webhook message (signed, retried on the Svix schedule) and logs each attempt.")
def deliver_webhook_messages(
    context: dg.OpExecutionContext, postgres: PostgresResource, object_store: ObjectStoreResource
) -> dg.Output:
    result = deliver_due(postgres.get_engine(), store=object_store.get_store())
    if result.disabled:
        context.log.warning(f"disabled webhook subscription(s): {', '.join(result.disabled)}")
    return dg.Output(
        None,
        metadata={
            "attempted": result.attempted,
            "delivered": result.delivered,
            "retrying": result.retrying,
            "failed": result.failed,
            "disabled": result.disabled,
            "p95_attempt_ms": _p95(result.attempt_ms),
            "seconds": round(result.seconds, 3),
        },
    )


@dg.job(
    description="One webhook delivery cycle; started by webhook_delivery_sensor or `observatory webhooks deliver`.",
    executor_def=dg.in_process_executor,
)
def deliver_webhooks() -> None:
    deliver_webhook_messages()


@dg.op(description="Deletes webhook delivery attempts, and finished messages, older than 7 days.")
def prune_webhook_log(postgres: PostgresResource) -> dg.Output:
    with postgres.get_engine().begin() as conn:
        removed = prune(conn)
    return dg.Output(None, metadata=removed)


@dg.job(description="Keeps the webhook delivery log to its 7 days.", executor_def=dg.in_process_executor)
def prune_webhook_deliveries() -> None:
    prune_webhook_log()


prune_webhook_deliveries_schedule = utc_schedule(
    prune_webhook_deliveries, "40 2 * * *", "prune_webhook_deliveries", "Daily: the webhook log keeps 7 days."
)
