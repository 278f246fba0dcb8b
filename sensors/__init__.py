"""Sensors that start Observatory runs when new data arrives, one module per domain."""

from sensors.collection_runs import collection_run_sensor
from sensors.enrichment import enrich_after_ingest, events_after_enrichment
from sensors.publishing import takedown_sensor
from sensors.trends import trends_after_events
from sensors.webhooks import webhook_delivery_sensor

#: Every sensor of the code location.
SENSORS = [collection_run_sensor, enrich_after_ingest, events_after_enrichment, trends_after_events, takedown_sensor,
           webhook_delivery_sensor]  # fmt: skip

__all__ = [
    "SENSORS",
    "collection_run_sensor",
    "enrich_after_ingest",
    "events_after_enrichment",
    "takedown_sensor",
    "trends_after_events",
    "webhook_delivery_sensor",
]
