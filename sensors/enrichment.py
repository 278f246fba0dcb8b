"""Sensors that chain enrichment and clustering to ingestion: each collection run flows on as soon as
the step before it succeeds."""

from __future__ import annotations

import dagster as dg

from observatory_assets.defs.enrichment.assets import enrich_job
from observatory_assets.defs.events.assets import events_job
from observatory_assets.defs.ingestion.assets import ingest_job


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.SUCCESS,
    monitored_jobs=[ingest_job],
    request_job=enrich_job,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Enriches each collection run as soon as its ingestion run succeeds.",
)
def enrich_after_ingest(context: dg.RunStatusSensorContext):
    partition = context.dagster_run.tags.get("dagster/partition")
    if partition is None:
        return dg.SkipReason("the ingestion run had no partition")
    return dg.RunRequest(partition_key=partition, run_key=f"enrich-after-{context.dagster_run.run_id}")


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.SUCCESS,
    monitored_jobs=[enrich_job],
    request_job=events_job,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Clusters new items into events whenever a collection run has been enriched.",
)
def events_after_enrichment(context: dg.RunStatusSensorContext):
    return dg.RunRequest(run_key=f"events-after-{context.dagster_run.run_id}")
