"""The credits domain's definitions: the ledger's housekeeping and its invariants."""

import dagster as dg

from observatory_assets.defs.credits import assets, jobs

defs = dg.Definitions(
    assets=[assets.credit_ledger],
    asset_checks=[assets.credit_ledger_invariants],
    jobs=[jobs.credit_ledger_job],
    schedules=[jobs.credit_housekeeping_schedule],
)
