"""``observatory demo``: the whole asset graph on the embedded defaults, and a summary."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import click

from observatory_assets.cli.collection import sync_sources
from observatory_assets.cli.context import Observatory, pass_observatory
from observatory_assets.cli.runner import ingest_runs, run_job
from observatory_assets.defs.actors.analysis import analysis_overview
from observatory_assets.defs.actors.charts import CHART_DAYS
from observatory_assets.defs.collection.catalog import load_catalog
from observatory_assets.defs.collection.polling import CycleReport, run_cycle
from observatory_assets.defs.events.listing import busiest_ended_day, event_counts
from observatory_assets.defs.events.quality import labelled_clustering_score
from observatory_assets.defs.exports.delivery import completed_exports
from observatory_assets.defs.ingestion.collect import guess_format, run_status
from observatory_assets.defs.ingestion.demo_data import sample_story_labels
from observatory_assets.defs.ingestion.integrity import item_count, rejects_by_reason
from observatory_assets.defs.ingestion.loading import items_per_platform
from observatory_assets.defs.operations.backups import latest_backup
from observatory_assets.defs.publishing.site import INDEX_KEY
from observatory_assets.defs.trends.ledger import trend_states
from observatory_assets.lib import migrations
from observatory_assets.lib.feed_server import Document, FeedServer
from resources.settings import mask_dsn, platform_settings

#: The bundled sample the demo collects: one payload per source (package data of observatory_assets).
SAMPLE_DIR = Path(__file__).resolve().parents[1] / "sample_data"


#: Platform-shaped sources served beside the feeds: name → (format, served endpoint, params, answer file).
PLATFORM_SAMPLE_DIR = Path(__file__).resolve().parents[1] / "sample_platforms"
PLATFORM_SAMPLES = {
    "reddit-denmark": ("reddit", "/r/Denmark/new.json", {"limit": 100}, "reddit-denmark.json"),
    "bluesky-klima": ("bluesky", "/xrpc/app.bsky.feed.searchPosts", {"q": "klima", "lang": "da"}, "bluesky-klima.json"),
}

#: The demo's query designs: which bundled sources each watches (one collection run per design and cycle).
DEMO_DESIGNS = {
    "danish-news": ("dr-nyheder", "politiken"),
    "world-news": ("bbc-world", "broken-feed", "guardian-api", "social-stream", "wire-service"),
    "danish-social": tuple(PLATFORM_SAMPLES),
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
        for name, (fmt, endpoint, params, answer) in PLATFORM_SAMPLES.items():
            server.documents[endpoint] = Document((PLATFORM_SAMPLE_DIR / answer).read_bytes(), "application/json")
            catalog["sources"].append({"name": name, "url": server.url(endpoint), "format": fmt, "params": params})
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
    "analyse_actor_network",
    "partition_rollover",
    "export_content_and_network",
    "nightly_backup",
    "restore_verification",
    "integrity_audit",
    "credit_housekeeping",
)
#: Then the digest of the busiest day goes to the static site (`publish_digest`).


def run_the_graph(obs: Observatory) -> tuple[list[dict], str | None]:
    """Carry every collected run on to its events as the sensor does (load, features, embeddings, actor
    links, events, trend evidence in one run each), snapshot today's trends, count the last 30 days'
    volumes, run the rest of the asset graph and publish the digest of the busiest ended day, all through
    Dagster in-process; (every run's outcome, the digest's day or None)."""
    outcomes = ingest_runs(obs, job="ingest_to_events")
    instance = obs.instance
    today = datetime.now(UTC).date()
    outcomes.append(run_job(instance, "update_trends", partition_key=today.isoformat()))
    volume_days = ((today - timedelta(days=CHART_DAYS - 1)).isoformat(), today.isoformat())
    outcomes.append(run_job(instance, "count_volumes", partition_range=volume_days))
    designs = {"query_designs": list(DEMO_DESIGNS)}
    outcomes.append(run_job(instance, "export_volumes", ops_config={"volume_exports": designs}))
    outcomes += [run_job(instance, name) for name in DEMO_JOBS]
    with obs.engine.connect() as conn:
        digest_day = busiest_ended_day(conn)
    if digest_day is not None:  # that day's trend snapshot first, so the digest shows the day's trend moves
        outcomes.append(run_job(instance, "update_trends", partition_key=digest_day))
        outcomes.append(
            run_job(instance, "publish_digest", digest_day, ops_config={"publish_records": {"target": "static"}})
        )
    return outcomes, digest_day


def demo_summary(conn) -> dict:
    """What the demo left, each read from the domain that owns it: collection runs and their accounting,
    rejects by reason, items, events, completed exports, the latest backup and the active trends."""
    events, largest = event_counts(conn)
    return {
        "status": run_status(conn),
        "reasons": rejects_by_reason(conn),
        "items": item_count(conn),
        "platforms": items_per_platform(conn),
        "events": events,
        "largest_event": largest,
        "exports": completed_exports(conn),
        "backup": latest_backup(conn),
        "trends": trend_states(conn, active_only=True),
        "analysis": analysis_overview(conn),
    }


@click.command("demo")
@pass_observatory
def demo(obs: Observatory) -> int:
    """Run the whole demo on the embedded defaults.

    Services and migrations, the bundled sample served on loopback and polled twice, every run ingested,
    enriched and clustered through Dagster, the rest of the asset graph, and a summary."""
    from resources.embedded import prepare_dagster_home, resolve_database_urls

    settings = obs.settings
    app_url, _ = resolve_database_urls(settings)
    migrations.upgrade(app_url)
    home = prepare_dagster_home(settings)
    samples = sorted(p for p in SAMPLE_DIR.iterdir() if p.suffix in (".xml", ".atom", ".jsonl", ".csv"))
    first, second = serve_and_poll_samples(obs.engine, obs.store, samples, settings.home / "demo_sources")
    for design, run_id in first.runs.items():
        click.echo(f"polled {design:24} → collection run {run_id}")
    outcomes, digest_day = run_the_graph(obs)
    with obs.engine.connect() as conn:
        summary = demo_summary(conn)
    summary["story_score"] = labelled_clustering_score(obs.engine, sample_story_labels())
    failed = [o for o in outcomes if not o["success"]]
    t = summary["status"]["totals"]
    lines = [
        "",
        "Observatory demo",
        "  Dagster runs (ingest to events, trends, volumes, network, rollover, exports, backup, verify, audit, publish): "
        f"{len(outcomes)} ({len(failed)} failed)",
        f"  delivered {t['delivered']} rows: {t['loaded']} loaded, {t['duplicates']} duplicates, {t['rejected']} rejected",
        f"  every delivered row accounted for: {t['accounted_for']}",
        f"  polling:  cycle 1 fetched {first.changed} of {first.due} feeds ({first.items_collected} rows) into "
        f"{len(first.runs)} collection runs; cycle 2 sent {second.requests_sent} requests, "
        f"{second.not_modified} answered 304 Not Modified, {second.changed} re-collected, {len(second.runs)} new runs",
        f"  raw_items now holds {summary['items']} items, clustered into {summary['events']} events "
        f"(largest: {summary['largest_event']} items)",
        "  events against the sample's story labels: B³F1 {bcubed_f1:.3f} over {items} items of {stories} stories "
        "in {events} events".format(**summary["story_score"]),
        "  analysis: volumes counted on {volume_days} days; actor network of {nodes} nodes in {communities} "
        "communities, best connected: {central}".format(**summary["analysis"]),
        "  platforms: " + ", ".join(f"{platform} {n}" for platform, n in summary["platforms"].items()),
        "  rejects by reason: " + ", ".join(f"{r}={n}" for r, n in summary["reasons"]),
        "  exports: " + ", ".join(f"{fmt} ({count} records) {key}" for fmt, count, key in summary["exports"]),
    ]
    if summary["backup"]:
        key, size, verified = summary["backup"]
        lines.append(f"  backup: {key} ({size} bytes, restore verified: {verified})")
    lines += [f"  trend {trend['name']}: p = {trend['probability']:.3f} (baseline {trend['baseline']:.2f}, "
              f"{trend['evidence']} evidence); top: {trend['top']}" for trend in summary["trends"]]  # fmt: skip
    if digest_day is not None:
        lines.append(f"  digest:   {digest_day} published to the static site: {obs.store.download_url(INDEX_KEY)}")
        lines.append("            (or run `observatory site serve` and open http://127.0.0.1:8765/)")
    lines += [f"  FAILED {o['job']} (dagster run {o['dagster_run']}): {o['error']}" for o in failed]
    lines.append(f"  data:     {mask_dsn(app_url)}")
    lines.append(f"  objects:  {settings.objects_root if settings.embedded_object_store else settings.s3_endpoint}")
    lines.append(f"  Dagster:  DAGSTER_HOME={home} (runs, events and schedules in Postgres)")
    lines.append("  UI:       make ui   (then open http://127.0.0.1:3000)")
    click.echo("\n".join(lines))
    return 1 if failed or not t["accounted_for"] else 0


COMMANDS = (demo,)
