"""The automation condition sensor: evaluates every asset's ``AutomationCondition`` (declarative
automation), so a collection run's items flow on (features, embeddings, events, trend evidence, today's
snapshot) however ``raw_items`` was materialized: the ingestion job, the UI, a backfill."""

import dagster as dg

#: Seconds between evaluations: each step of the flow starts within this (plus its run's start-up) of the last.
AUTOMATION_INTERVAL_SECONDS = 5

automation_sensor = dg.AutomationConditionSensorDefinition(
    "observatory_automation",
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=AUTOMATION_INTERVAL_SECONDS,
    description="Requests the runs the assets' automation conditions call for (one backfill for many days).",
)
