"""``observatory demo``: the whole asset graph on the embedded defaults, and a summary."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path

from observatory_assets.cli.collection import sync_sources
from observatory_assets.cli.ingestion import run_status
from observatory_assets.cli.runner import engine_and_store, ingest_runs, materialize_enrichment_and_events, run_job
from observatory_assets.defs.collection.catalog import load_catalog
from observatory_assets.defs.collection.polling import CycleReport, run_cycle
from observatory_assets.defs.events.quality import labelled_clustering_score
from observatory_assets.defs.ingestion.collect import guess_format
from observatory_assets.defs.ingestion.demo_data import sample_story_labels
from observatory_assets.defs.publishing.site import INDEX_KEY
from observatory_assets.lib import migrations
from observatory_assets.lib.feed_server import Document, FeedServer
from observatory_assets.lib.statuses import ExportStatus
from resources.settings import mask_dsn, platform_settings

#: The bundled sample the demo collects: one payload per source (package data of observatory_assets).
SAMPLE_DIR = Path(__file__).resolve().parents[1] / "sample_data"


#: The demo's query designs: which bundled sources each watches (one collection run per design and cycle).
DEMO_DESIGNS = {
    "danish-news": ("dr-nyheder", "politiken"),
    "world-news": ("bbc-world", "broken-feed", "guardian-api", "social-stream", "wire-service"),
}
_CONTENT_TYPES = {"rss": "application/rss+xml", "atom": "application/atom+xml", "jsonl": "application/x-ndjson",
                  "csv": "text/csv"}  # fmt: skip


def project_catalog_attributes() -> dict[str, dict]:
    """What the project's own catalog (``OBSERVATORY_SOURCES_DIR``) says of each source, but where it is
    fetched from: the demo serves the same sources itself, described the same way."""
    directory = platform_settings().sources_dir
    if not directory.is_dir():
        return {}
    return {
        name: spec.model_dump(include={"credibility", "language", "aggregator", "poll", "cost"}, exclude_none=True)
        for name, (_, spec) in load_catalog(directory).sources.items()
    }


def serve_and_poll_samples(engine, store, samples: list[Path], catalog_dir: Path) -> tuple[CycleReport, CycleReport]:
    """Serve the bundled sample on a loopback HTTP server (with ETags), sync a catalog pointing at it and
    poll twice: the first cycle collects every feed, the second is answered by 304s."""
    import yaml

    from resources.outbound import OutboundClient, OutboundPolicy

    described = project_catalog_attributes()
    with FeedServer() as server:
        catalog = {"sources": [], "designs": []}
        for path in samples:
            fmt = guess_format(path.name)
            server.documents[f"/{path.name}"] = Document(path.read_bytes(), _CONTENT_TYPES[fmt])
            url = server.url(f"/{path.name}")
            catalog["sources"].append({**described.get(path.stem, {}), "name": path.stem, "url": url, "format": fmt})
        for name, sources in DEMO_DESIGNS.items():
            catalog["designs"].append(
                {"name": name, "title": name.replace("-", " ").capitalize(), "sources": list(sources)}
            )
        catalog_dir.mkdir(parents=True, exist_ok=True)
        (catalog_dir / "demo.yaml").write_text(yaml.safe_dump(catalog, sort_keys=False), encoding="utf-8")
        sync_sources(engine, str(catalog_dir))
        # the demo's own server is on loopback: exactly that address is allowed, nothing else private
        policy = OutboundPolicy.from_settings(allowed_networks=(f"{server.base_url.split('//')[1].split(':')[0]}/32",))
        with OutboundClient(policy) as client:
            first = run_cycle(engine, store, client, force=True)
            second = run_cycle(engine, store, client, force=True)
    return first, second


#: The unpartitioned jobs the demo runs after ingestion and clustering: the rest of the asset graph.
DEMO_JOBS = (
    "partition_rollover",
    "export_content_and_network",
    "nightly_backup",
    "restore_verification",
    "integrity_audit",
    "credit_housekeeping",
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
    first, second = serve_and_poll_samples(engine, store, samples, settings.home / "demo_sources")
    for design, run_id in first.runs.items():
        print(f"polled {design:24} → collection run {run_id}")
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
    print(
        f"  polling:  cycle 1 fetched {first.changed} of {first.due} feeds ({first.items_collected} rows) into "
        f"{len(first.runs)} collection runs; cycle 2 sent {second.requests_sent} requests, "
        f"{second.not_modified} answered 304 Not Modified, {second.changed} re-collected, {len(second.runs)} new runs"
    )
    print(f"  raw_items now holds {items} items, clustered into {events[0]} events (largest: {events[1]} items)")
    score = labelled_clustering_score(engine, sample_story_labels())
    print(f"  events against the sample's story labels: B³F1 {score['bcubed_f1']:.3f} over {score['items']} items "
          f"of {score['stories']} stories in {score['events']} events")  # fmt: skip
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
