"""The Observatory code location: every asset, check, job, sensor and schedule, and the resources.

Each domain module defines its own ``defs`` (assets, checks, jobs, schedules);
this entry point merges them and binds the resources for the environment.
"""

import dagster as dg

from observatory_assets import ingestion
from resources import observatory_resources
from sensors import collection_run_sensor

defs = dg.Definitions.merge(
    ingestion.defs,
    dg.Definitions(sensors=[collection_run_sensor], resources=observatory_resources()),
)
