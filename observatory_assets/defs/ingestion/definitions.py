"""The ingestion domain's definitions, loaded by the code location's ``load_from_defs_folder``."""

import dagster as dg

from observatory_assets.defs.ingestion import assets, jobs

defs = dg.Definitions(
    assets=[assets.collection_runs, assets.raw_items],
    asset_checks=[
        assets.raw_items_unique_keys,
        assets.raw_items_default_partition,
        assets.raw_items_rows_accounted_for,
    ],
    jobs=[jobs.collect_job, jobs.inbox_job, jobs.ingest_job, jobs.ingest_to_events_job],
)
