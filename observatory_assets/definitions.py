"""The Observatory code location: every asset, check, job, sensor and schedule, and the resources."""

from __future__ import annotations

import dagster as dg

from observatory_assets import ingestion
from resources import observatory_resources
from sensors import collection_run_sensor

defs = dg.Definitions(
    assets=[ingestion.collection_runs, ingestion.raw_items],
    asset_checks=[
        ingestion.raw_items_unique_keys,
        ingestion.raw_items_default_partition,
        ingestion.raw_items_rows_accounted_for,
    ],
    jobs=[ingestion.collect_job, ingestion.ingest_job],
    sensors=[collection_run_sensor],
    resources=observatory_resources(),
)
