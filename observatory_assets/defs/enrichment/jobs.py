"""Enrichment jobs: the features and embeddings of one collection run."""

import dagster as dg

from observatory_assets.defs.enrichment.assets import item_embeddings, item_features
from observatory_assets.lib.dagster import collection_run_partitions, heavy_job_executor

enrich_job = dg.define_asset_job(
    "enrich_collection_run",
    selection=dg.AssetSelection.assets(item_features, item_embeddings),
    partitions_def=collection_run_partitions,
    description="Features and embeddings of one collection run (a partition).",
    executor_def=heavy_job_executor(),
)
