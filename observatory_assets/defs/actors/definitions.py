"""The actors domain's definitions: item links to actors, daily volumes, the actor network."""

import dagster as dg

from observatory_assets.defs.actors import assets, jobs

defs = dg.Definitions(
    assets=[assets.item_actors, assets.volume_stats, assets.actor_network],
    jobs=[jobs.actor_network_job, jobs.volume_job],
)
