"""Dagster definitions of operations: monthly partitions, backups, restore verification and their schedules."""

from dataclasses import asdict
from datetime import UTC, datetime

import dagster as dg
from pydantic import Field
from sqlalchemy import text

from observatory_assets.defs.enrichment.assets import EmbedderResource
from observatory_assets.defs.enrichment.integrity import incomplete_features, vectors_of_other_spaces
from observatory_assets.defs.events.integrity import check_centroids, check_events_have_items, check_items_in_one_event
from observatory_assets.defs.ingestion.integrity import key_conflicts, unbalanced_runs
from observatory_assets.defs.operations.backups import (
    CHECKSUM_TABLES,
    DEFAULT_KEEP_DAYS,
    DEFAULT_KEEP_MIN,
    MAX_BACKUP_AGE,
    MAX_VERIFIED_AGE,
    PG_BIN_ENV,
    fail_stale_backups,
    prune_backups,
    take_backup,
)
from observatory_assets.defs.operations.restore import newest_backup, verify_backup
from observatory_assets.defs.operations.retention import apply_retention, retention_from_env
from observatory_assets.defs.operations.rollover import (
    DEFAULT_LOCK_TIMEOUT_S,
    DEFAULT_MONTHS_AHEAD,
    OPERATIONS,
    PARTITIONED_TABLES,
    month_partitions,
    partition_health,
    roll_over,
)
from observatory_assets.lib.dagster import utc_schedule
from observatory_assets.lib.statuses import BackupStatus
from resources import ObjectStoreResource, PostgresResource


class PartitionRolloverConfig(dg.Config):
    months_ahead: int = Field(default=DEFAULT_MONTHS_AHEAD, description="Months after the current one that must exist.")
    retention_months: dict[str, int] = Field(
        default={},
        description="Months to keep per table (raw_items, trend_snapshots) and for collection_payloads, over "
        "OBSERVATORY_RETENTION_<NAME>_MONTHS; unset or 0 keeps everything. Older months are archived to "
        "Parquet, verified, then dropped.",
    )
    lock_timeout_s: float = Field(default=DEFAULT_LOCK_TIMEOUT_S, description="Longest wait for a table lock.")


@dg.asset(
    group_name=OPERATIONS,
    deps=["raw_items", "trend_snapshots"],  # the tables whose months it creates, archives and drops
    kinds={"postgres", "parquet"},
    description="The monthly partitions of raw_items and trend_snapshots: the current and the next N months "
    "exist, DEFAULT holds no dated rows, months past retention are archived to Parquet and dropped.",
)
def monthly_partitions(
    context: dg.AssetExecutionContext,
    config: PartitionRolloverConfig,
    postgres: PostgresResource,
    object_store: ObjectStoreResource,
) -> dg.MaterializeResult:
    engine, store = postgres.get_engine(), object_store.get_store()
    retention_months = {**retention_from_env(), **config.retention_months}
    rollover = roll_over(engine, config.months_ahead, lock_timeout_s=config.lock_timeout_s)
    retention = apply_retention(engine, store, retention_months, lock_timeout_s=config.lock_timeout_s)
    health = [partition_health(engine, table, config.months_ahead) for table in PARTITIONED_TABLES]
    with engine.connect() as conn:
        partitions = sum(len(month_partitions(conn, table)) for table in PARTITIONED_TABLES)
    archives = [
        {"partition": a.partition, "rows": a.rows, "key": a.key, "dropped": a.dropped} for a in retention.archived
    ]
    metadata = {
        "dagster/row_count": dg.MetadataValue.int(partitions),
        "months_ahead": dg.MetadataValue.int(config.months_ahead),
        "retention_months": dg.MetadataValue.json(retention_months),
        "partitions_created": dg.MetadataValue.json(rollover.created),
        "rows_moved_from_default": dg.MetadataValue.json(rollover.moved_rows),
        "busy_skipped": dg.MetadataValue.json(rollover.busy),
        "health": dg.MetadataValue.json([asdict(h) for h in health]),
        "archived": dg.MetadataValue.json(archives),
        "payload_runs_archived": dg.MetadataValue.json([asdict(p) for p in retention.payload_runs]),
        "kept_after_failure": dg.MetadataValue.json(retention.kept),
        "rollover_seconds": dg.MetadataValue.float(round(rollover.seconds, 3)),
        "retention_seconds": dg.MetadataValue.float(round(retention.seconds, 3)),
    }
    if retention.kept:
        raise dg.Failure(
            description=f"retention kept {len(retention.kept)} item(s) in place after a failure: "
            + "; ".join(f"{k}: {v}" for k, v in retention.kept.items()),
            metadata=metadata,
        )
    context.log.info(f"created {len(rollover.created)} partition(s), archived {len(archives)} month(s)")
    return dg.MaterializeResult(metadata=metadata)


def _configured_months_ahead(context: dg.AssetCheckExecutionContext) -> int:
    event = context.instance.get_latest_materialization_event(monthly_partitions.key)
    recorded = (
        event.asset_materialization.metadata.get("months_ahead") if event and event.asset_materialization else None
    )
    return int(recorded.value) if recorded is not None else DEFAULT_MONTHS_AHEAD


@dg.asset_check(asset=monthly_partitions, description="The current month and the next N months exist for every table.")
def months_ready_ahead(context: dg.AssetCheckExecutionContext, postgres: PostgresResource) -> dg.AssetCheckResult:
    months_ahead = _configured_months_ahead(context)
    health = [partition_health(postgres.get_engine(), table, months_ahead) for table in PARTITIONED_TABLES]
    missing = {h.table: h.missing_months for h in health if h.missing_months}
    return dg.AssetCheckResult(
        passed=not missing,
        metadata={
            "months_ahead_required": months_ahead,
            "months_ready_ahead": dg.MetadataValue.json({h.table: h.months_ready_ahead for h in health}),
            "missing_months": dg.MetadataValue.json(missing),
        },
        description=None if not missing else "run the partition_rollover job",
    )


@dg.asset_check(
    asset=monthly_partitions,
    description="No DEFAULT partition holds dated rows (rows without a partition key value have nowhere else to go).",
)
def default_partitions_empty(postgres: PostgresResource) -> dg.AssetCheckResult:
    health = [partition_health(postgres.get_engine(), table) for table in PARTITIONED_TABLES]
    dated = {h.table: h.default_dated_rows for h in health}
    return dg.AssetCheckResult(
        passed=not any(dated.values()),
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "dated_rows_in_default": dg.MetadataValue.json(dated),
            "undated_rows_in_default": dg.MetadataValue.json({h.table: h.default_undated_rows for h in health}),
        },
        description=None
        if not any(dated.values())
        else "run the partition_rollover job to move them into their months",
    )


partition_rollover_job = dg.define_asset_job(
    "partition_rollover",
    selection=dg.AssetSelection.assets(monthly_partitions),
    description="Roll monthly partitions ahead, empty DEFAULT, archive and drop months past retention.",
)

partition_rollover_schedule = utc_schedule(
    partition_rollover_job, "15 0 * * *", "partition_rollover", "Daily partition rollover and retention (idempotent)."
)


class BackupConfig(dg.Config):
    keep_days: int = Field(default=DEFAULT_KEEP_DAYS, description="Delete completed backups older than this ...")
    keep_min: int = Field(default=DEFAULT_KEEP_MIN, description="... but always keep this many newest ones.")
    pg_bin_dir: str = Field(default="", description=f"Directory of pg_dump/pg_restore; default ${PG_BIN_ENV}, "
                            "then the embedded server's tools, then PATH.")  # fmt: skip


@dg.asset(
    group_name=OPERATIONS,
    kinds={"postgres"},
    description="Nightly `pg_dump -Fc` of the application database in object storage "
    "(postgres/YYYY/MM/DD/observatory_YYYYMMDD_HHMMSS.dump) with size, SHA-256, row counts and key-table "
    "fingerprints in `backups`; old backups pruned by age, keeping a minimum number.",
)
def postgres_backups(
    config: BackupConfig, postgres: PostgresResource, object_store: ObjectStoreResource
) -> dg.MaterializeResult:
    engine, store = postgres.get_engine(), object_store.get_store()
    abandoned = fail_stale_backups(engine, store)
    backup = take_backup(engine, store, postgres.resolved_url(), config.pg_bin_dir)
    pruned = prune_backups(engine, store, config.keep_days, config.keep_min)
    with engine.connect() as conn:
        kept = conn.execute(
            text("SELECT count(*) FROM backups WHERE status = :completed"), {"completed": BackupStatus.COMPLETED}
        ).scalar_one()
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": dg.MetadataValue.int(kept),
            "key": backup.key,  # run metadata is kept: an (expiring) download link is signed on read, never stored
            "size_mb": dg.MetadataValue.float(round(backup.size / 1e6, 3)),
            "sha256": backup.sha256,
            "seconds": dg.MetadataValue.float(round(backup.seconds, 3)),
            "mb_per_s": dg.MetadataValue.float(round(backup.mb_per_s, 2)),
            "rows_in_backup": dg.MetadataValue.int(sum(backup.table_counts.values())),
            "table_counts": dg.MetadataValue.json(backup.table_counts),
            "pruned": dg.MetadataValue.json(pruned),
            "abandoned_marked_failed": dg.MetadataValue.json(abandoned),
            "database": postgres.display_url,
        }
    )


@dg.asset_check(
    asset=postgres_backups,
    description=f"Error: the newest backup is missing or older than {MAX_BACKUP_AGE.total_seconds() / 3600:.0f} "
    f"hours. Warning: restore verification is overdue — no backup verified within {MAX_VERIFIED_AGE.days} days "
    "although backups have existed that long (a first backup is not yet due for verification).",
)
def backups_recent_and_verified(postgres: PostgresResource) -> dg.AssetCheckResult:
    with postgres.get_engine().connect() as conn:
        newest, verified, first = conn.execute(
            text("SELECT max(started_at) FILTER (WHERE status = :completed), max(verified_at), "
                 "min(started_at) FILTER (WHERE status IN (:completed, :pruned)) FROM backups"),
            {"completed": BackupStatus.COMPLETED, "pruned": BackupStatus.PRUNED},
        ).one()  # fmt: skip
    now = datetime.now(UTC)
    backup_problem = None
    if newest is None or now - newest > MAX_BACKUP_AGE:
        backup_problem = f"newest backup {'missing' if newest is None else f'from {newest:%Y-%m-%d %H:%M} UTC'}"
    # the verification clock starts at the newest verification, or at the first backup if none was verified
    verification_overdue = first is not None and now - (verified or first) > MAX_VERIFIED_AGE
    problems = [backup_problem] if backup_problem else []
    if verification_overdue:
        problems.append(f"newest verification {'missing' if verified is None else f'from {verified:%Y-%m-%d}'}")
    return dg.AssetCheckResult(
        passed=not problems,
        severity=dg.AssetCheckSeverity.ERROR if backup_problem else dg.AssetCheckSeverity.WARN,
        metadata={
            "newest_backup": str(newest) if newest else "none",
            "newest_verified": str(verified) if verified else "none",
            "verification_overdue": verification_overdue,
        },
        description="; ".join(problems) or None,
    )


@dg.asset(
    deps=[postgres_backups],
    group_name=OPERATIONS,
    kinds={"postgres"},
    description="The newest backup restored into a scratch database and compared, table by table, with "
    "the row counts and key-table fingerprints it recorded; sets `backups.verified_at`.",
)
def backup_verification(
    config: BackupConfig, postgres: PostgresResource, object_store: ObjectStoreResource
) -> dg.MaterializeResult:
    engine = postgres.get_engine()
    key = newest_backup(engine)
    if key is None:
        raise dg.Failure("there is no completed backup to verify; materialize postgres_backups first")
    result = verify_backup(engine, object_store.get_store(), postgres.resolved_url(), key, config.pg_bin_dir)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": dg.MetadataValue.int(result.rows),
            "key": key,
            "tables_compared": dg.MetadataValue.int(result.tables),
            "checksummed_tables": dg.MetadataValue.json(list(CHECKSUM_TABLES)),
            "download_seconds": dg.MetadataValue.float(round(result.download_s, 3)),
            "restore_seconds": dg.MetadataValue.float(round(result.restore_s, 3)),
            "compare_seconds": dg.MetadataValue.float(round(result.compare_s, 3)),
        }
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


#: The weekly audit's checks: one per archive-wide invariant of the domains.
ARCHIVE_AUDITS = {
    "raw_items_archive_audit": "No two items share a (source, external_id) or content hash; every ingested run adds up.",
    "item_features_archive_audit": "Every featurized item has a text-search configuration and a full-text vector.",
    "item_embeddings_archive_audit": "Every vector comes from the configured embedder (others await re-embedding).",
    "events_archive_audit": "Every event has its items; every embedded item is in one event; centroids in one space.",
}


@dg.asset(
    deps=["raw_items", "item_features", "item_embeddings", "events"],
    group_name=OPERATIONS,
    kinds={"postgres"},
    check_specs=[
        dg.AssetCheckSpec(name, asset="archive_integrity", description=d) for name, d in ARCHIVE_AUDITS.items()
    ],
    description="The weekly integrity audit: the invariants the per-run checks guard, measured over the whole "
    "archive (full scans, so it runs weekly, never per run).",
)
def archive_integrity(postgres: PostgresResource, embedder: EmbedderResource) -> dg.MaterializeResult:
    engine = postgres.get_engine()
    current = embedder.get_embedder(engine)
    with engine.connect() as conn:
        keys = key_conflicts(conn)
        runs_checked, unbalanced = unbalanced_runs(conn)
        features = incomplete_features(conn)
        other_spaces = vectors_of_other_spaces(conn, current.name, current.dimensions)
    events = {
        **check_events_have_items(engine),
        **check_items_in_one_event(engine, current.name),
        **check_centroids(engine, current.name, current.dimensions),
    }
    findings = {
        "raw_items_archive_audit": {**keys, "runs_checked": runs_checked, "unbalanced_runs": len(unbalanced)},
        "item_features_archive_audit": features,
        "item_embeddings_archive_audit": {f"vectors of {space}": n for space, n in other_spaces.items()},
        "events_archive_audit": events,
    }
    failing = {**keys, "unbalanced_runs": len(unbalanced), "incomplete": features["without_config_or_vector"]}
    passed = {
        "raw_items_archive_audit": not failing["duplicate_keys"]
        and not failing["duplicate_content_hashes"]
        and not unbalanced,
        "item_features_archive_audit": not failing["incomplete"],
        "item_embeddings_archive_audit": not other_spaces,
        "events_archive_audit": not any(events.values()),
    }
    return dg.MaterializeResult(
        metadata={name: dg.MetadataValue.json(found) for name, found in findings.items()},
        check_results=[
            dg.AssetCheckResult(
                check_name=name,
                passed=passed[name],
                metadata={k: dg.MetadataValue.int(v) for k, v in findings[name].items()},
                severity=dg.AssetCheckSeverity.WARN
                if name == "item_embeddings_archive_audit"
                else dg.AssetCheckSeverity.ERROR,
            )
            for name in ARCHIVE_AUDITS
        ],
    )


integrity_audit_job = dg.define_asset_job(
    "integrity_audit",
    selection=dg.AssetSelection.assets(archive_integrity),
    description="Measure every archive-wide invariant (full scans): the weekly integrity audit.",
)
integrity_audit_schedule = utc_schedule(
    integrity_audit_job, "0 4 * * 6", "weekly_integrity_audit", "Weekly audit of the whole archive."
)

defs = dg.Definitions(
    assets=[monthly_partitions, postgres_backups, backup_verification, archive_integrity],
    asset_checks=[months_ready_ahead, default_partitions_empty, backups_recent_and_verified],
    jobs=[partition_rollover_job, nightly_backup_job, restore_verification_job, integrity_audit_job],
    schedules=[
        partition_rollover_schedule,
        nightly_backup_schedule,
        weekly_restore_verification_schedule,
        integrity_audit_schedule,
    ],
)
