"""Analysis jobs: the actor network, and the daily volumes of a range of days in one run (a backfill)."""

import dagster as dg

from observatory_assets.defs.actors.assets import actor_network, volume_days, volume_stats

actor_network_job = dg.define_asset_job(
    "analyse_actor_network",
    selection=[actor_network],
    description="Rebuild the actor network with its degree, betweenness and communities.",
)

volume_job = dg.define_asset_job(
    "count_volumes",
    selection=[volume_stats],
    partitions_def=volume_days,
    description="Recount the daily volumes of a day, or of a range of days in one run.",
)
