"""Ingestion jobs: a source collected into a collection run (``collect_job``), an inbox drop taken
(``inbox_job``, started by ``inbox_sensor``) and one collection run loaded (``ingest_collection_run``,
started by ``observatory ingest``), or loaded and carried on to its events in the same run
(``ingest_to_events``, started by ``collection_run_sensor``)."""

from datetime import UTC, datetime

import dagster as dg
from pydantic import Field

from observatory_assets.defs.ingestion.assets import raw_items
from observatory_assets.defs.ingestion.collect import SourceRequest, collect, guess_format
from observatory_assets.defs.ingestion.inbox import take_inbox_object
from observatory_assets.lib.dagster import collection_run_partitions, heavy_job_executor
from observatory_assets.lib.statuses import CollectionRunStatus
from resources import ObjectStoreResource, PostgresResource


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

#: What a newly completed collection run is carried on to in its own ingestion run, so that a new item
#: reaches its event, the trend ledger and the webhook outbox without waiting for two more run launches
#: (each costs seconds: a process that imports the code location): its features, embeddings and actor
#: links, then the events and the trend evidence. Declarative automation carries on whatever was loaded
#: any other way, and sees these as done.
CARRIED_ON_WITH_THE_LOAD = ("item_features", "item_embeddings", "item_actors", "events", "trend_evidence")

ingest_to_events_job = dg.define_asset_job(
    "ingest_to_events",
    selection=dg.AssetSelection.assets(raw_items, *CARRIED_ON_WITH_THE_LOAD),
    partitions_def=collection_run_partitions,
    description=(
        "Load one collection run (a partition) into raw_items and carry it on in the same run to its "
        "features, embeddings and actor links, the events and the trend evidence (collection_run_sensor)."
    ),
    executor_def=heavy_job_executor(dg.in_process_executor),
)
