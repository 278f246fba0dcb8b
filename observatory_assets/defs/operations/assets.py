"""Operations assets: monthly partitions, backups, restore verification and the weekly integrity audit."""

from dataclasses import asdict
from datetime import UTC, datetime

import dagster as dg
from pydantic import Field

from observatory_assets.defs.enrichment.integrity import incomplete_features, vectors_of_other_spaces
from observatory_assets.defs.enrichment.resources import EmbedderResource
from observatory_assets.defs.events.integrity import check_centroids, check_events_have_items, check_items_in_one_event
from observatory_assets.defs.ingestion.integrity import key_conflicts, unbalanced_runs
from observatory_assets.defs.operations.backups import (
    CHECKSUM_TABLES,
    DEFAULT_KEEP_DAYS,
    DEFAULT_KEEP_MIN,
    MAX_BACKUP_AGE,
    MAX_VERIFIED_AGE,
    PG_BIN_ENV,
    backup_clock,
    completed_backups,
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
        "dagster/row_count": partitions,
        "months_ahead": config.months_ahead,
        "retention_months": retention_months,
        "partitions_created": rollover.created,
        "rows_moved_from_default": rollover.moved_rows,
        "busy_skipped": rollover.busy,
        "health": [asdict(h) for h in health],
        "archived": archives,
        "payload_runs_archived": [asdict(p) for p in retention.payload_runs],
        "kept_after_failure": retention.kept,
        "rollover_seconds": round(rollover.seconds, 3),
        "retention_seconds": round(retention.seconds, 3),
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
            "months_ready_ahead": {h.table: h.months_ready_ahead for h in health},
            "missing_months": missing,
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
            "dated_rows_in_default": dated,
            "undated_rows_in_default": {h.table: h.default_undated_rows for h in health},
        },
        description=None
        if not any(dated.values())
        else "run the partition_rollover job to move them into their months",
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
        kept = completed_backups(conn)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": kept,
            "key": backup.key,  # run metadata is kept: an (expiring) download link is signed on read, never stored
            "size_mb": round(backup.size / 1e6, 3),
            "sha256": backup.sha256,
            "seconds": round(backup.seconds, 3),
            "mb_per_s": round(backup.mb_per_s, 2),
            "rows_in_backup": sum(backup.table_counts.values()),
            "table_counts": backup.table_counts,
            "pruned": pruned,
            "abandoned_marked_failed": abandoned,
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
        newest, verified, first = backup_clock(conn)
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
            "dagster/row_count": result.rows,
            "key": key,
            "tables_compared": result.tables,
            "checksummed_tables": list(CHECKSUM_TABLES),
            "download_seconds": round(result.download_s, 3),
            "restore_seconds": round(result.restore_s, 3),
            "compare_seconds": round(result.compare_s, 3),
        }
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
        metadata=findings,
        check_results=[
            dg.AssetCheckResult(
                check_name=name,
                passed=passed[name],
                metadata=findings[name],
                severity=dg.AssetCheckSeverity.WARN
                if name == "item_embeddings_archive_audit"
                else dg.AssetCheckSeverity.ERROR,
            )
            for name in ARCHIVE_AUDITS
        ],
    )
