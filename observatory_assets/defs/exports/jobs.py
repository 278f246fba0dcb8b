"""Exports jobs: the items and the actor network exported together; the daily volumes; filters in run config."""

import dagster as dg

from observatory_assets.defs.exports.assets import content_exports, network_exports, volume_exports
from observatory_assets.lib.dagster import heavy_job_executor

export_job = dg.define_asset_job(
    "export_content_and_network",
    selection=[content_exports, network_exports],
    description="Export the items (CSV, XLSX, NDJSON, Parquet) and the actor network (GEXF); filters in run config.",
    executor_def=heavy_job_executor(),
)

volume_export_job = dg.define_asset_job(
    "export_volumes",
    selection=[volume_exports],
    description="Export the daily volume statistics (CSV, Parquet); filters in run config.",
)
