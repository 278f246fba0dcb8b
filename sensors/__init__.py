"""Sensors that start Observatory runs when new data arrives, one module per domain."""

from sensors.automation import automation_sensor
from sensors.collection_runs import collection_run_sensor
from sensors.inbox import inbox_sensor
from sensors.polling import polling_sensor
from sensors.publishing import takedown_sensor
from sensors.webhooks import webhook_delivery_sensor

#: Every sensor of the code location.
SENSORS = [
    collection_run_sensor,
    automation_sensor,
    takedown_sensor,
    polling_sensor,
    inbox_sensor,
    webhook_delivery_sensor,
]

__all__ = [
    "SENSORS",
    "automation_sensor",
    "collection_run_sensor",
    "inbox_sensor",
    "polling_sensor",
    "takedown_sensor",
    "webhook_delivery_sensor",
]
