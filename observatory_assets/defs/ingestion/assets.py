"""Ingestion assets: collection runs become deduplicated ``raw_items``.

``raw_items`` is partitioned by collection run (a dynamic partition per run,
added by ``collection_run_sensor`` or ``observatory ingest``), so each run can
be materialized, re-materialized or backfilled on its own from the UI or CLI.
"""

import dagster as dg
from pydantic import Field

from observatory_assets.defs.credits.ledger import settle_ingested_run
from observatory_assets.defs.ingestion.integrity import default_partition_rows, key_conflicts, unbalanced_runs
from observatory_assets.defs.ingestion.loading import ingest_collection_run
from observatory_assets.defs.ingestion.preview import run_preview
from observatory_assets.lib.dagster import (
    INGEST_QUEUE,
    RunCheckVerdict,
    collection_run_check,
    collection_run_partitions,
    markdown_table,
    worker_metadata,
)
from resources import ObjectStoreResource, PostgresResource

INGESTION = "ingestion"

collection_runs = dg.AssetSpec(
    "collection_runs",
    group_name=INGESTION,
    description=(
        "Collection runs in Postgres (`collection_runs`): what collectors delivered, with raw payloads "
        "kept unchanged in object storage. Created by `collect_job` or `observatory collect`; "
        "`collection_run_sensor` watches them."
    ),
    kinds={"postgres"},
)


class RawItemsConfig(dg.Config):
    force: bool = Field(default=False, description="Parse and load again even if the run's payloads are loaded.")


@dg.asset(
    partitions_def=collection_run_partitions,
    deps=[collection_runs],
    group_name=INGESTION,
    kinds={"postgres"},
    retry_policy=dg.RetryPolicy(max_retries=2, delay=5, backoff=dg.Backoff.EXPONENTIAL),
    pool="observatory_ingest",
    op_tags=INGEST_QUEUE,
)
def raw_items(
    context: dg.AssetExecutionContext,
    config: RawItemsConfig,
    postgres: PostgresResource,
    object_store: ObjectStoreResource,
) -> dg.MaterializeResult:
    """Items of one collection run: parsed, normalized (UTC, URLs, NUL bytes), deduplicated on
    `(source, external_id)` and content hash (duplicates linked in `item_duplicates`), bad rows
    quarantined in `rejected_items` with a reason, bulk-loaded with COPY. Idempotent per run."""
    run_id = int(context.partition_key)
    engine = postgres.get_engine()
    result = ingest_collection_run(engine, object_store.get_store(), run_id, force=config.force)
    if result.skipped:
        context.log.info(f"collection run {run_id}: payloads already loaded, counts verified")
    with engine.begin() as conn:
        settlement = settle_ingested_run(conn, run_id)
    with engine.connect() as conn:
        preview = run_preview(conn, run_id)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": result.loaded,
            "collection_run": run_id,
            "delivered": result.delivered,
            "loaded": result.loaded,
            "duplicates": result.duplicates,
            "rejected": result.rejected,
            "accounted_for": result.accounted_for,
            "already_loaded": result.skipped,
            "by_source": result.by_source,
            "reject_reasons": result.reject_reasons,
            "partitions_created": result.partitions_created,
            "seconds": round(result.seconds, 3),
            "credits_settled": float(settlement.actual) if settlement else 0.0,
            "preview": dg.MetadataValue.md(markdown_table(preview)),
            **worker_metadata(),
        }
    )


def _unique_keys(conn, run_id: int, _resources) -> RunCheckVerdict:
    found = key_conflicts(conn, run_id)
    return RunCheckVerdict(not any(found.values()), found)


def _dated_rows_in_default(conn, run_id: int, _resources) -> RunCheckVerdict:
    found = default_partition_rows(conn, run_id)
    passed = found["dated_items_waiting_for_a_partition"] == 0
    return RunCheckVerdict(passed, found, "run partition_rollover to move dated rows into their months")


def _rows_accounted_for(conn, run_id: int, _resources) -> RunCheckVerdict:
    checked, unbalanced = unbalanced_runs(conn, run_id)
    hint = "the collection run's counts do not balance" if checked == 1 else "the collection run has not been ingested"
    return RunCheckVerdict(checked == 1 and not unbalanced, {"unbalanced_runs": unbalanced}, hint)


raw_items_unique_keys = collection_run_check(
    raw_items,
    "raw_items_unique_keys",
    "No item of the collection run shares its (source, external_id) or content hash with another item.",
    _unique_keys,
)
raw_items_default_partition = collection_run_check(
    raw_items,
    "raw_items_default_partition",
    "The run's items in the DEFAULT partition have no publication date; dated ones are flagged.",
    _dated_rows_in_default,
    severity=dg.AssetCheckSeverity.WARN,
)
raw_items_rows_accounted_for = collection_run_check(
    raw_items,
    "raw_items_rows_accounted_for",
    "For the ingested collection run, delivered = loaded + duplicates + rejected, counted from the tables.",
    _rows_accounted_for,
)
