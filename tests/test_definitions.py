"""The code location loads with every asset, check, job, sensor, schedule and resource."""

import dagster as dg

from observatory_assets.definitions import defs

ASSETS = {
    "collection_runs": "ingestion", "raw_items": "ingestion",
    "item_features": "enrichment", "item_embeddings": "enrichment",
    "events": "events",
    "trend_evidence": "trends", "trend_snapshots": "trends",
    "content_exports": "exports", "network_exports": "exports",
    "monthly_partitions": "operations", "postgres_backups": "operations", "backup_verification": "operations",
    "archive_integrity": "operations",
    "publish_records": "publishing", "audit_log_archive": "publishing",
}  # fmt: skip
CHECKS = {
    "raw_items": {"raw_items_unique_keys", "raw_items_default_partition", "raw_items_rows_accounted_for"},
    "item_features": {"item_features_complete"},
    "item_embeddings": {"item_embeddings_one_space"},
    "events": {"events_have_items", "embedded_items_in_one_event", "centroids_match_embedder"},
    "content_exports": {"export_objects_stored", "formats_agree"},
    "network_exports": {"export_objects_stored", "network_consistent"},
    "monthly_partitions": {"months_ready_ahead", "default_partitions_empty"},
    "postgres_backups": {"backups_recent_and_verified"},
    "archive_integrity": {
        "raw_items_archive_audit",
        "item_features_archive_audit",
        "item_embeddings_archive_audit",
        "events_archive_audit",
    },
    "publish_records": {"target_matches_record"},
    "trend_evidence": {"trend_state_matches_ledger"},
    "trend_snapshots": {"snapshots_match_ledger", "yesterday_snapshot_exists"},
}
JOBS = {"collect_job", "ingest_collection_run", "enrich_collection_run", "cluster_events", "export_content_and_network",
        "partition_rollover", "nightly_backup", "restore_verification", "integrity_audit", "publish_digest",
        "takedown_job", "audit_retention", "update_trends", "deliver_webhooks", "prune_webhook_deliveries"}  # fmt: skip
SENSORS = {"collection_run_sensor", "enrich_after_ingest", "events_after_enrichment", "takedown_sensor",
           "trends_after_events", "webhook_delivery_sensor"}  # fmt: skip
SCHEDULES = {"partition_rollover": "partition_rollover", "nightly_backup": "nightly_backup",
             "weekly_restore_verification": "restore_verification", "weekly_integrity_audit": "integrity_audit",
             "daily_digest": "publish_digest", "audit_retention": "audit_retention",
             "daily_trend_snapshot": "update_trends", "prune_webhook_deliveries": "prune_webhook_deliveries"}  # fmt: skip


def test_every_asset_is_present_in_its_group():
    graph = defs.resolve_asset_graph()
    assert {key.to_user_string(): graph.get(key).group_name for key in graph.get_all_asset_keys()} == ASSETS


def test_lineage_follows_the_spec():
    graph = defs.resolve_asset_graph()

    def parents(name):
        return {key.to_user_string() for key in graph.get(dg.AssetKey(name)).parent_keys}

    assert parents("raw_items") == {"collection_runs"}
    assert "raw_items" in parents("item_features")
    assert "item_features" in parents("item_embeddings")
    assert "item_embeddings" in parents("events")
    assert "raw_items" in parents("content_exports")
    assert parents("trend_evidence") == {"events"}
    assert parents("trend_snapshots") == {"trend_evidence"}


def test_every_asset_check_is_present():
    checks: dict[str, set[str]] = {}
    for key in defs.resolve_asset_graph().asset_check_keys:
        checks.setdefault(key.asset_key.to_user_string(), set()).add(key.name)
    assert checks == CHECKS


def test_jobs_sensors_schedules_and_resources():
    assert {job.name for job in defs.resolve_all_job_defs()} - {"__ASSET_JOB"} == JOBS
    assert {sensor.name for sensor in defs.sensors} == SENSORS
    assert {schedule.name: schedule.job_name for schedule in defs.schedules} == SCHEDULES
    assert set(defs.resources) == {"postgres", "object_store", "publish_target", "embedder"}
    defs.validate_loadable(defs)


def test_partitioned_assets_share_the_collection_run_partitions():
    graph = defs.resolve_asset_graph()
    for name in ("raw_items", "item_features", "item_embeddings"):
        partitions = graph.get(dg.AssetKey(name)).partitions_def
        assert isinstance(partitions, dg.DynamicPartitionsDefinition) and partitions.name == "collection_runs"


def test_the_daily_digest_publishes_the_day_that_ended_at_six_utc():
    schedule = defs.resolve_schedule_def("daily_digest")
    assert schedule.cron_schedule == "0 6 * * *" and schedule.execution_timezone == "UTC"
    assert isinstance(defs.resolve_assets_def("publish_records").partitions_def, dg.DailyPartitionsDefinition)
