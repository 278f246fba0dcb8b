"""The Observatory code location: the one composition root.

Each domain under ``defs/`` defines its own ``defs`` (assets, checks, jobs,
schedules) in its ``assets.py``; every sensor lives in ``sensors/``. This module
merges them and binds the resources for the environment (embedded parts, or the
servers the ``OBSERVATORY_*`` variables point at).
"""

import dagster as dg

from observatory_assets.defs.collection import assets as collection
from observatory_assets.defs.credits import assets as credits
from observatory_assets.defs.enrichment import assets as enrichment
from observatory_assets.defs.events import assets as events
from observatory_assets.defs.exports import assets as exports
from observatory_assets.defs.ingestion import assets as ingestion
from observatory_assets.defs.operations import assets as operations
from observatory_assets.defs.publishing import assets as publishing
from observatory_assets.defs.trends import assets as trends
from observatory_assets.defs.webhooks import assets as webhooks
from resources import observatory_resources
from sensors import SENSORS


def resources() -> dict[str, dg.ConfigurableResource]:
    """Infrastructure resources plus the configured embedder (``OBSERVATORY_EMBEDDER``)."""
    return {**observatory_resources(), "embedder": enrichment.EmbedderResource.from_env()}


defs = dg.Definitions.merge(
    ingestion.defs,
    collection.defs,
    enrichment.defs,
    events.defs,
    exports.defs,
    operations.defs,
    trends.defs,
    publishing.defs,
    credits.defs,
    webhooks.defs,
    dg.Definitions(sensors=SENSORS, resources=resources()),
)
