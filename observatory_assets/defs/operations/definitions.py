"""The operations domain's definitions: monthly partitions, backups, restore verification, the
integrity audit, their checks and schedules."""

import dagster as dg

from observatory_assets.defs.operations import assets, jobs

defs = dg.Definitions(
    assets=[assets.monthly_partitions, assets.postgres_backups, assets.backup_verification, assets.archive_integrity],
    asset_checks=[assets.months_ready_ahead, assets.default_partitions_empty, assets.backups_recent_and_verified],
    jobs=[
        jobs.partition_rollover_job,
        jobs.nightly_backup_job,
        jobs.restore_verification_job,
        jobs.integrity_audit_job,
    ],
    schedules=[
        jobs.partition_rollover_schedule,
        jobs.nightly_backup_schedule,
        jobs.weekly_restore_verification_schedule,
        jobs.integrity_audit_schedule,
    ],
)
