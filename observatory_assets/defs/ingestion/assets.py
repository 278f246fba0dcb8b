"""Ingestion assets: collection runs become deduplicated ``raw_items``.

``raw_items`` is partitioned by collection run (a dynamic partition per run,
added by ``collection_run_sensor`` or ``observatory ingest``), so each run can
be materialized, re-materialized or backfilled on its own from the UI or CLI.
"""

from datetime import UTC, datetime

import dagster as dg
from pydantic import Field
from sqlalchemy import text

from observatory_assets.defs.credits.ledger import settle_ingested_run
from observatory_assets.defs.ingestion.collect import SourceRequest, collect, guess_format
from observatory_assets.defs.ingestion.inbox import take_inbox_object
from observatory_assets.defs.ingestion.integrity import default_partition_rows, key_conflicts, unbalanced_runs
from observatory_assets.defs.ingestion.loading import ingest_collection_run
from observatory_assets.lib.dagster import (
    INGEST_QUEUE,
    RunCheckVerdict,
    collection_run_check,
    collection_run_partitions,
    heavy_job_executor,
    markdown_table,
    worker_metadata,
)
from observatory_assets.lib.statuses import CollectionRunStatus
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
        preview = (
            conn.execute(
                text(
                    """
                SELECT r.id, s.name AS source, r.published_at, left(r.title, 80) AS title, r.language
                  FROM raw_items r JOIN sources s ON s.id = r.source_id
                 WHERE r.collection_run_id = :run_id ORDER BY r.id LIMIT 10
                """
                ),
                {"run_id": run_id},
            )
            .mappings()
            .all()
        )
    preview_rows = [{k: (str(v) if v is not None else "") for k, v in row.items()} for row in preview]
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": dg.MetadataValue.int(result.loaded),
            "collection_run": dg.MetadataValue.int(run_id),
            "delivered": dg.MetadataValue.int(result.delivered),
            "loaded": dg.MetadataValue.int(result.loaded),
            "duplicates": dg.MetadataValue.int(result.duplicates),
            "rejected": dg.MetadataValue.int(result.rejected),
            "accounted_for": dg.MetadataValue.bool(result.accounted_for),
            "already_loaded": dg.MetadataValue.bool(result.skipped),
            "by_source": dg.MetadataValue.json(result.by_source),
            "reject_reasons": dg.MetadataValue.json(result.reject_reasons),
            "partitions_created": dg.MetadataValue.json(result.partitions_created),
            "seconds": dg.MetadataValue.float(round(result.seconds, 3)),
            "credits_settled": dg.MetadataValue.float(float(settlement.actual) if settlement else 0.0),
            "preview": dg.MetadataValue.md(markdown_table(preview_rows)),
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
    return RunCheckVerdict(
        checked == 1 and not unbalanced, {"unbalanced_runs": dg.MetadataValue.json(unbalanced)}, hint
    )


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


class CollectConfig(dg.Config):
    """One source to collect: a file path or a URL."""

    source: str = Field(description="Source name, e.g. 'dr-nyheder'; registered on first use.")
    path: str | None = Field(default=None, description="Local file with the payload.")
    url: str | None = Field(default=None, description="http(s) URL to fetch.")
    format: str | None = Field(default=None, description="rss, atom, jsonl or csv; guessed from the name if unset.")


@dg.op(description="Fetch a source into a new collection run and mark it completed.")
def collect_source(
    context: dg.OpExecutionContext, config: CollectConfig, postgres: PostgresResource, object_store: ObjectStoreResource
) -> int:
    location = config.path or config.url or ""
    request = SourceRequest(config.source, config.format or guess_format(location), path=config.path, url=config.url)
    run_id = collect(postgres.get_engine(), object_store.get_store(), [request])
    context.instance.add_dynamic_partitions(collection_run_partitions.name, [str(run_id)])
    context.log.info(f"collection run {run_id} completed")
    context.add_output_metadata({"collection_run": run_id})
    return run_id


@dg.job(description="Create a collection run from a feed, JSONL or CSV source (launch from the UI with config).")
def collect_job():
    collect_source()


class InboxObjectConfig(dg.Config):
    """One object dropped in the inbox, as the inbox sensor saw it."""

    key: str = Field(description="Object key under inbox/<source>/.")
    etag: str = Field(description="The object's ETag when it was seen.")


@dg.op(
    description="Turn an object dropped under inbox/<source>/ into a collection run; move it to inbox/processed/.",
    retry_policy=dg.RetryPolicy(max_retries=3, delay=10, backoff=dg.Backoff.EXPONENTIAL),
)
def take_inbox_drop(
    context: dg.OpExecutionContext,
    config: InboxObjectConfig,
    postgres: PostgresResource,
    object_store: ObjectStoreResource,
) -> int:
    today = datetime.now(UTC).date()
    outcome = take_inbox_object(postgres.get_engine(), object_store.get_store(), config.key, config.etag, today)
    if outcome.status is CollectionRunStatus.COMPLETED:
        context.instance.add_dynamic_partitions(collection_run_partitions.name, [str(outcome.collection_run_id)])
    context.log.info(f"{config.key}: collection run {outcome.collection_run_id} {outcome.status}, kept at "
                     f"{outcome.processed_key}{f' ({outcome.error})' if outcome.error else ''}")  # fmt: skip
    context.add_output_metadata({"collection_run": outcome.collection_run_id, "status": outcome.status.value,
                                 "processed_key": outcome.processed_key, "error": outcome.error or ""})  # fmt: skip
    return outcome.collection_run_id


@dg.job(description="Take one object dropped in the inbox (started by inbox_sensor).")
def inbox_job():
    take_inbox_drop()


ingest_job = dg.define_asset_job(
    "ingest_collection_run",
    selection=dg.AssetSelection.assets(raw_items),
    partitions_def=collection_run_partitions,
    description="Load one collection run (a partition) into raw_items.",
    # one load and its checks, in order: a step subprocess each would cost more than their work
    executor_def=heavy_job_executor(dg.in_process_executor),
)


defs = dg.Definitions(
    assets=[collection_runs, raw_items],
    asset_checks=[raw_items_unique_keys, raw_items_default_partition, raw_items_rows_accounted_for],
    jobs=[collect_job, inbox_job, ingest_job],
)
