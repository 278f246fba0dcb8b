"""The sensor that keeps the trend ledger up to date: evidence follows the events as soon as they change."""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg

from observatory_assets.defs.events.assets import events_job
from observatory_assets.defs.trends.assets import update_trends


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.SUCCESS,
    monitored_jobs=[events_job],
    request_job=update_trends,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Updates trend evidence and today's snapshot whenever events have been clustered.",
)
def trends_after_events(context: dg.RunStatusSensorContext):
    today = datetime.now(UTC).date().isoformat()
    return dg.RunRequest(partition_key=today, run_key=f"trends-after-{context.dagster_run.run_id}")
