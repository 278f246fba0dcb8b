"""``observatory demo``: the whole asset graph on the embedded defaults, and a summary."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path

from observatory_assets.cli.ingestion import run_status
from observatory_assets.cli.runner import engine_and_store, ingest_runs, materialize_enrichment_and_events, run_job
from observatory_assets.defs.ingestion.collect import SourceRequest, collect, guess_format
from observatory_assets.defs.publishing.site import INDEX_KEY
from observatory_assets.lib import migrations
from observatory_assets.lib.statuses import ExportStatus
from resources.settings import mask_dsn, platform_settings

#: The bundled sample the demo collects: one payload per source (package data of observatory_assets).
SAMPLE_DIR = Path(__file__).resolve().parents[1] / "sample_data"


#: The unpartitioned jobs the demo runs after ingestion and clustering: the rest of the asset graph.
DEMO_JOBS = (
    "partition_rollover",
    "export_content_and_network",
    "nightly_backup",
    "restore_verification",
    "integrity_audit",
)
#: Then the digest of the busiest day goes to the static site (`publish_digest`).


def busiest_day(engine) -> str | None:
    """The ended UTC day with the most events: the demo publishes its digest."""
    from sqlalchemy import text

    with engine.connect() as conn:
        day = conn.execute(
            text(
                "SELECT (item_time AT TIME ZONE 'UTC')::date AS day FROM event_items "
                "WHERE item_time < date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' "
                "GROUP BY 1 ORDER BY count(DISTINCT event_id) DESC, 1 DESC LIMIT 1"
            )
        ).scalar_one_or_none()
    return day.isoformat() if day else None


def cmd_demo(args: argparse.Namespace) -> int:
    """Services, migrations, the bundled sample collected and ingested through Dagster, a summary."""
    from sqlalchemy import text

    from resources.embedded import prepare_dagster_home, resolve_database_urls

    settings = platform_settings()
    app_url, _ = resolve_database_urls(settings)

    migrations.upgrade(app_url)
    home = prepare_dagster_home(settings)
    engine, store = engine_and_store()
    samples = sorted(p for p in SAMPLE_DIR.iterdir() if p.suffix in (".xml", ".atom", ".jsonl", ".csv"))
    for path in samples:
        run_id = collect(engine, store, [SourceRequest(path.stem, guess_format(path.name), path=str(path))])
        print(f"collected {path.name:24} → collection run {run_id}")
    import dagster as dg

    outcomes = ingest_runs()
    with dg.DagsterInstance.get() as instance:
        outcomes += materialize_enrichment_and_events(instance, [o["collection_run"] for o in outcomes])
        outcomes.append(run_job(instance, "update_trends", partition_key=datetime.now(UTC).date().isoformat()))
        outcomes += [run_job(instance, name) for name in DEMO_JOBS]
        digest_day = busiest_day(engine)
        if digest_day is not None:  # that day's trend snapshot first, so the digest shows the day's trend moves
            outcomes.append(run_job(instance, "update_trends", partition_key=digest_day))
            outcomes.append(
                run_job(instance, "publish_digest", digest_day, ops_config={"publish_records": {"target": "static"}})
            )
    failed = [o for o in outcomes if not o["success"]]
    status = run_status(engine)
    with engine.connect() as conn:
        reasons = conn.execute(
            text("SELECT reason, count(*) FROM rejected_items GROUP BY reason ORDER BY 2 DESC")
        ).all()
        items = conn.execute(text("SELECT count(*) FROM raw_items")).scalar_one()
        events = conn.execute(text("SELECT count(*), coalesce(max(item_count), 0) FROM events")).one()
        exported = conn.execute(
            text("SELECT format, record_count, object_key FROM exports WHERE status = :completed ORDER BY id"),
            {"completed": ExportStatus.COMPLETED},
        ).all()
        backup = conn.execute(
            text("SELECT object_key, size_bytes, verified_at IS NOT NULL FROM backups ORDER BY id DESC LIMIT 1")
        ).one_or_none()
    t = status["totals"]
    print()
    print("Observatory demo")
    print(
        f"  Dagster runs (ingest, enrich, cluster, trends, rollover, export, backup, verify, audit, publish): {len(outcomes)} ({len(failed)} failed)"
    )
    print(
        f"  delivered {t['delivered']} rows: {t['loaded']} loaded, {t['duplicates']} duplicates, {t['rejected']} rejected"
    )
    print(f"  every delivered row accounted for: {t['accounted_for']}")
    print(f"  raw_items now holds {items} items, clustered into {events[0]} events (largest: {events[1]} items)")
    print("  rejects by reason: " + ", ".join(f"{r}={n}" for r, n in reasons))
    print("  exports: " + ", ".join(f"{fmt} ({count} records) {key}" for fmt, count, key in exported))
    if backup:
        print(f"  backup: {backup[0]} ({backup[1]} bytes, restore verified: {backup[2]})")
    for trend in trend_summary(engine):
        print(f"  trend {trend['name']}: p = {trend['probability']:.3f} (baseline {trend['baseline']:.2f}, "
              f"{trend['evidence']} evidence); top: {trend['top']}")  # fmt: skip
    if digest_day is not None:
        print(f"  digest:   {digest_day} published to the static site: {store.download_url(INDEX_KEY)}")
        print("            (or run `observatory site serve` and open http://127.0.0.1:8765/)")
    for o in failed:
        print(f"  FAILED {o['job']} (dagster run {o['dagster_run']}): {o['error']}")
    print(f"  data:     {mask_dsn(app_url)}")
    print(f"  objects:  {settings.objects_root if settings.embedded_object_store else settings.s3_endpoint}")
    print(f"  Dagster:  DAGSTER_HOME={home} (runs, events and schedules in Postgres)")
    print("  UI:       make ui   (then open http://127.0.0.1:3000)")
    return 1 if failed or not t["accounted_for"] else 0


def trend_summary(engine) -> list[dict]:
    """Each active trend's probability and its largest live piece of evidence."""
    from sqlalchemy import text

    with engine.connect() as conn:
        rows = conn.execute(
            text(
                """
                SELECT t.name, 1 / (1 + exp(-t.current_log_odds)) AS probability, t.baseline_probability AS baseline,
                       (SELECT count(*) FROM trend_evidence e WHERE e.trend_id = t.id AND e.retracted_at IS NULL)
                           AS evidence,
                       (SELECT e.reasoning FROM trend_evidence e WHERE e.trend_id = t.id AND e.retracted_at IS NULL
                         ORDER BY abs(e.delta_log_odds) DESC, e.id LIMIT 1) AS top
                  FROM trends t WHERE t.active ORDER BY t.name
                """
            )
        ).mappings()
        return [{**r, "top": r["top"] or "no evidence yet"} for r in rows]


def register_commands(sub) -> None:
    """``observatory demo``."""
    sub.add_parser("demo", help="run the whole demo on the embedded defaults").set_defaults(func=cmd_demo)
