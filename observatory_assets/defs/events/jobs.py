"""Events jobs: cluster newly embedded items into events."""

import dagster as dg

from observatory_assets.defs.events.assets import events
from observatory_assets.lib.dagster import heavy_job_executor

events_job = dg.define_asset_job(
    "cluster_events",
    selection=dg.AssetSelection.assets(events),
    description="Cluster newly embedded items into events.",
    executor_def=heavy_job_executor(),
)
