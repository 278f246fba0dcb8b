"""The Observatory code location: every asset, check, job, sensor and schedule, and the resources.

Each domain module defines its own ``defs`` (assets, checks, jobs, schedules);
this entry point merges them and binds the resources for the environment.
"""

import dagster as dg

from observatory_assets import backups, enrichment, events, exports, ingestion, operations
from resources import observatory_resources
from sensors import collection_run_sensor

defs = dg.Definitions.merge(
    ingestion.defs,
    operations.defs,
    backups.defs,
    exports.defs,
    enrichment.defs,
    events.defs,
    dg.Definitions(sensors=[collection_run_sensor], resources=observatory_resources()),
)
