"""Operations jobs and their UTC schedules: partition rollover, nightly backup, weekly restore
verification and the weekly integrity audit."""

import dagster as dg

from observatory_assets.defs.operations.assets import (
    archive_integrity,
    backup_verification,
    monthly_partitions,
    postgres_backups,
)
from observatory_assets.lib.dagster import utc_schedule

partition_rollover_job = dg.define_asset_job(
    "partition_rollover",
    selection=dg.AssetSelection.assets(monthly_partitions),
    description="Roll monthly partitions ahead, empty DEFAULT, archive and drop months past retention.",
)

partition_rollover_schedule = utc_schedule(
    partition_rollover_job, "15 0 * * *", "partition_rollover", "Daily partition rollover and retention (idempotent)."
)

nightly_backup_job = dg.define_asset_job(
    "nightly_backup", selection=dg.AssetSelection.assets(postgres_backups), description="Back up and prune."
)
restore_verification_job = dg.define_asset_job(
    "restore_verification",
    selection=dg.AssetSelection.assets(backup_verification),
    description="Restore the newest backup into a scratch database and compare it.",
)
nightly_backup_schedule = utc_schedule(nightly_backup_job, "30 1 * * *", "nightly_backup")
weekly_restore_verification_schedule = utc_schedule(
    restore_verification_job, "30 3 * * 0", "weekly_restore_verification"
)

integrity_audit_job = dg.define_asset_job(
    "integrity_audit",
    selection=dg.AssetSelection.assets(archive_integrity),
    description="Measure every archive-wide invariant (full scans): the weekly integrity audit.",
)
integrity_audit_schedule = utc_schedule(
    integrity_audit_job, "0 4 * * 6", "weekly_integrity_audit", "Weekly audit of the whole archive."
)
