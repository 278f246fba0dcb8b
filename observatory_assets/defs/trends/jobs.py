"""Trends jobs: ``update_trends`` and its ``daily_trend_snapshot`` schedule (yesterday's final snapshot)."""

from datetime import UTC, timedelta

import dagster as dg

from observatory_assets.defs.trends.assets import trend_evidence, trend_snapshots

update_trends = dg.define_asset_job(
    "update_trends",
    selection=dg.AssetSelection.assets(trend_evidence, trend_snapshots),
    description="Sync trend files, update the evidence ledger (with restatement) and snapshot the day.",
)


@dg.schedule(
    job=update_trends,
    cron_schedule="30 0 * * *",
    execution_timezone="UTC",
    name="daily_trend_snapshot",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="At 00:30 UTC: the evidence brought up to date and yesterday's final snapshot written.",
)
def daily_trend_snapshot(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    # lib.dagster.utc_schedule cannot name a partition; this is the same UTC schedule for yesterday's day.
    day = (context.scheduled_execution_time.astimezone(UTC) - timedelta(days=1)).date().isoformat()
    return dg.RunRequest(run_key=f"trend-snapshot-{day}", partition_key=day)
