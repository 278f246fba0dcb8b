"""Publishing assets: the daily digest (``publish_records``) and the audit
trail's retention."""

from datetime import date

import dagster as dg
from pydantic import Field

from observatory_assets.defs.publishing.audit import archive_audit_log
from observatory_assets.defs.publishing.publisher import PublishOutcome, publish_day
from observatory_assets.defs.publishing.site import StaticTarget
from observatory_assets.defs.publishing.targets import Target, build_targets, close_targets, target_for
from resources import ObjectStoreResource, PostgresResource, PublishTarget
from resources.object_store import download_metadata
from resources.settings import platform_settings

PUBLISHING = "publishing"
#: The first day a digest can be published for.
FIRST_DIGEST_DAY = "2020-01-01"
daily_partitions = dg.DailyPartitionsDefinition(start_date=FIRST_DIGEST_DAY, timezone="UTC")


class PublishConfig(dg.Config):
    target: str = Field(
        default="", description="static or ghost; empty: the configured target (OBSERVATORY_PUBLISH_TARGET)."
    )


def _target_check(target: Target, outcome: PublishOutcome) -> dg.AssetCheckResult:
    """Does the target show what the record says, for the one day this run wrote?"""
    if isinstance(target, StaticTarget):
        present = target.store.size(outcome.external_id) is not None if outcome.external_id else False
        passed = outcome.record_id is None or present == outcome.live or outcome.action == "removed"
        details = {"page": outcome.external_id, "present": present, "live": outcome.live}
    else:
        post = target.client.find_post(slug=f"observatory-digest-{outcome.day.isoformat()}")  # type: ignore[attr-defined]
        expected = "published" if outcome.live else "draft"
        passed = (
            outcome.record_id is None or outcome.action == "removed" or (post is not None and post.status == expected)
        )
        details = {"post": post.id if post else None, "status": post.status if post else None, "expected": expected}
    return dg.AssetCheckResult(check_name="target_matches_record", passed=passed, metadata=details)


@dg.asset(
    group_name=PUBLISHING,
    partitions_def=daily_partitions,
    # the day's events with their items and sources, and the trend moves and charts from the ledger
    deps=["events", dg.AssetDep("raw_items", partition_mapping=dg.AllPartitionMapping()), "trend_evidence"],
    kinds={"postgres", "html", "ghost"},
    retry_policy=dg.RetryPolicy(max_retries=2, delay=10, backoff=dg.Backoff.EXPONENTIAL),
    check_specs=[
        dg.AssetCheckSpec(
            "target_matches_record",
            asset="publish_records",
            description="The target shows the day's digest exactly when its record says it is live.",
        )
    ],
)
def publish_records(
    context: dg.AssetExecutionContext, config: PublishConfig, postgres: PostgresResource,
    object_store: ObjectStoreResource, publish_target: PublishTarget,
) -> dg.MaterializeResult:  # fmt: skip
    """The day's digest (top events by distinct sources, size and novelty; trend moves) published to the
    static site (`site/` in object storage: index, page, JSON Feed, Atom) or to Ghost, one record per
    target and day. Unchanged content is a recorded skip; a day removed by a takedown is never republished."""
    day = date.fromisoformat(context.partition_key)
    engine, store = postgres.get_engine(), object_store.get_store()
    targets = build_targets(publish_target, store)
    try:
        target = target_for(targets, config.target or publish_target.kind)
        outcome = publish_day(engine, store, target, day, actor=f"dagster:{context.run_id}")
        check = _target_check(target, outcome)
    finally:
        close_targets(targets)
    metadata: dict = {
        "action": outcome.action,
        "target": outcome.target,
        "record_id": outcome.record_id,
        "external_id": outcome.external_id,
        "content_hash": outcome.content_hash,
        "live": outcome.live,
        "events": outcome.events,
        "items": outcome.items,
        "trend_moves": outcome.trends,
        "seconds": round(outcome.seconds, 3),
    }
    if outcome.url:  # a permanent link (Ghost); run metadata is kept, so a link that expires never goes there
        metadata["digest"] = download_metadata(outcome.url)
    if isinstance(target, StaticTarget):
        metadata |= {f"{name}_key": key for name, key in target.keys().items()}
    return dg.MaterializeResult(metadata=metadata, check_results=[check])


class AuditRetentionConfig(dg.Config):
    retention_days: int | None = Field(
        default=None,
        description="Archive and delete audit rows older than this many days; 0 keeps all. "
        "Default: OBSERVATORY_AUDIT_RETENTION_DAYS, else 365.",
    )


@dg.asset(group_name=PUBLISHING, kinds={"postgres", "parquet"})
def audit_log_archive(
    config: AuditRetentionConfig, postgres: PostgresResource, object_store: ObjectStoreResource
) -> dg.MaterializeResult:
    """Audit rows older than the retention, archived to Parquet in object storage (verified by reading it
    back), then deleted from `audit_log`."""
    days = platform_settings().audit_retention_days if config.retention_days is None else config.retention_days
    archive = archive_audit_log(postgres.get_engine(), object_store.get_store(), days)
    if archive is None:
        return dg.MaterializeResult(metadata={"archived_rows": 0})
    return dg.MaterializeResult(
        metadata={
            "archived_rows": archive.rows,
            "ids": f"{archive.first_id}-{archive.last_id}",
            "cutoff": archive.cutoff,
            "object_key": archive.key,
            "bytes": archive.size,
            "sha256": archive.sha256,
        }
    )
