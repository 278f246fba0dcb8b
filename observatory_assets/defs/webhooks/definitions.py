"""The webhooks domain's definitions (its jobs; ``webhook_delivery_sensor`` is in ``sensors/``)."""

import dagster as dg

from observatory_assets.defs.webhooks import jobs

defs = dg.Definitions(
    jobs=[jobs.deliver_webhooks, jobs.prune_webhook_deliveries], schedules=[jobs.prune_webhook_deliveries_schedule]
)
