"""The exports domain's definitions: content, network and volume exports, their checks and job."""

import dagster as dg

from observatory_assets.defs.exports import assets, jobs

defs = dg.Definitions(
    assets=[assets.content_exports, assets.network_exports, assets.volume_exports],
    jobs=[jobs.export_job, jobs.volume_export_job],
)
