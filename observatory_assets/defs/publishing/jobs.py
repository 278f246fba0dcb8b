"""Publishing jobs: due takedown stages (``takedown_job``, started by ``takedown_sensor``), the daily digest
(``publish_digest`` on the ``daily_digest`` schedule) and the audit trail's retention."""

import dagster as dg
from pydantic import Field

from observatory_assets.defs.publishing.assets import audit_log_archive, daily_partitions, publish_records
from observatory_assets.defs.publishing.takedowns import process_takedowns
from observatory_assets.defs.publishing.targets import build_targets, close_targets
from observatory_assets.lib.dagster import utc_schedule
from resources import ObjectStoreResource, PostgresResource, PublishTarget


class TakedownRunConfig(dg.Config):
    force: bool = Field(default=False, description="Also retry failed requests now, without waiting for the backoff.")


@dg.op(description="Runs every due takedown stage (stage 1, stage 2 past its deadline, restores after a cancel).")
def process_due_takedowns(
    context: dg.OpExecutionContext, config: TakedownRunConfig, postgres: PostgresResource,
    object_store: ObjectStoreResource, publish_target: PublishTarget,
) -> dg.Output:  # fmt: skip
    engine, store = postgres.get_engine(), object_store.get_store()
    targets = build_targets(publish_target, store)
    try:
        run = process_takedowns(engine, store, targets, actor=f"dagster:{context.run_id}", force=config.force)
    finally:
        close_targets(targets)
    metadata = {
        "withdrawn": run.withdrawn,
        "removed": run.removed,
        "restored": run.restored,
        "steps": {str(k): v for k, v in run.steps.items()},
    }
    if run.failures:
        raise dg.Failure(
            description=f"{len(run.failures)} takedown request(s) failed and stay in their stage for a retry",
            metadata={**metadata, "failures": {str(k): v for k, v in run.failures.items()}},
        )
    return dg.Output(None, metadata=metadata)


@dg.job(
    description="Processes due takedown stages; started by takedown_sensor or `observatory takedown run`.",
    executor_def=dg.in_process_executor,  # one op: no step subprocess between the request and stage 1
)
def takedown_job() -> None:
    process_due_takedowns()


publish_job = dg.define_asset_job("publish_digest", selection=[publish_records], partitions_def=daily_partitions)
daily_digest = dg.build_schedule_from_partitioned_job(
    publish_job, name="daily_digest", hour_of_day=6, minute_of_hour=0,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="At 06:00 UTC, publishes the digest of the day that just ended.",
)  # fmt: skip
audit_retention_job = dg.define_asset_job("audit_retention", selection=[audit_log_archive])
audit_retention_schedule = utc_schedule(audit_retention_job, "15 2 * * *", "audit_retention")
