"""Credit jobs: the ledger's housekeeping, every 15 minutes."""

import dagster as dg

from observatory_assets.defs.credits.assets import credit_ledger
from observatory_assets.lib.dagster import utc_schedule

credit_ledger_job = dg.define_asset_job(
    "credit_housekeeping",
    selection=dg.AssetSelection.assets(credit_ledger),
    description="Release the holds of failed runs, expire holds older than 24 h, check the balances.",
    executor_def=dg.in_process_executor,
)
credit_housekeeping_schedule = utc_schedule(
    credit_ledger_job, "*/15 * * * *", "credit_housekeeping", "Every 15 minutes: the credit ledger's housekeeping."
)
