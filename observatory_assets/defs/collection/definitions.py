"""The collection domain's definitions (its polling job; ``polling_sensor`` is in ``sensors/``)."""

import dagster as dg

from observatory_assets.defs.collection import jobs

defs = dg.Definitions(jobs=[jobs.poll_sources_job])
