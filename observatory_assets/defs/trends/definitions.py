"""The trends domain's definitions: the evidence ledger, the daily snapshots, their checks and schedule."""

import dagster as dg

from observatory_assets.defs.trends import assets, jobs

defs = dg.Definitions(
    assets=[assets.trend_evidence, assets.trend_snapshots],
    asset_checks=[assets.trend_state_matches_ledger, assets.snapshots_match_ledger, assets.yesterday_snapshot_exists],
    jobs=[jobs.update_trends],
    schedules=[jobs.daily_trend_snapshot],
)
