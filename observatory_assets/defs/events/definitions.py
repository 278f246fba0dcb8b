"""The events domain's definitions: the ``events`` asset, its checks and the clustering job."""

import dagster as dg

from observatory_assets.defs.events import assets, jobs

defs = dg.Definitions(
    assets=[assets.events],
    asset_checks=[assets.events_have_items, assets.embedded_items_in_one_event, assets.centroids_match_embedder],
    jobs=[jobs.events_job],
)
