"""The publishing domain's definitions: the digest, the audit archive, takedowns and their schedules."""

import dagster as dg

from observatory_assets.defs.publishing import assets, jobs

defs = dg.Definitions(
    assets=[assets.publish_records, assets.audit_log_archive],
    jobs=[jobs.publish_job, jobs.takedown_job, jobs.audit_retention_job],
    schedules=[jobs.daily_digest, jobs.audit_retention_schedule],
)
