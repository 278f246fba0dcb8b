"""``observatory enrich``, ``search`` and ``events``."""

from __future__ import annotations

import click

from observatory_assets.cli.context import Observatory, limit_option, pass_observatory
from observatory_assets.cli.runner import materialize_enrichment_and_events, register_partitions
from observatory_assets.defs.enrichment.embeddings import runs_to_enrich
from observatory_assets.defs.enrichment.features import search_items
from observatory_assets.defs.enrichment.resources import EmbedderResource
from observatory_assets.defs.enrichment.sentiment import LABELS
from observatory_assets.defs.events.listing import largest_events


@click.command("enrich")
@click.option("--run", type=int, help="only this collection run (default: every run with items to enrich)")
@pass_observatory
def enrich(obs: Observatory, run: int | None) -> int:
    """Features, embeddings and events for ingested runs.

    Through Dagster in-process, recorded in its instance as the sensors' runs are."""
    engine = obs.engine
    if run:
        run_ids = [run]
    else:
        embedder = EmbedderResource.from_env().get_embedder(engine).name
        with engine.connect() as conn:
            run_ids = runs_to_enrich(conn, embedder)
    register_partitions(obs.instance, run_ids)
    outcomes = materialize_enrichment_and_events(obs.instance, run_ids)
    for o in outcomes:
        what = f"collection run {o['collection_run']}" if o["collection_run"] is not None else "events"
        click.echo(f"{o['job']:24} {what}: {'ok' if o['success'] else 'FAILED'} (dagster run {o['dagster_run']})")
    return 0 if all(o["success"] for o in outcomes) else 1


@click.command("search")
@click.argument("query")
@click.option("--language", help="only items of this language (ISO code, e.g. da)")
@click.option("--sentiment", type=click.Choice(LABELS), help="only items of this sentiment label")
@click.option("--platform", help="only items of this platform (e.g. reddit, bluesky, rss)")
@limit_option(20, "at most this many items")
@pass_observatory
def search(
    obs: Observatory, query: str, language: str | None, sentiment: str | None, platform: str | None, limit: int
) -> int:
    """Full-text search of items (per-language stemming).

    QUERY is in web-search syntax: words, "a phrase", -excluded, or."""
    hits = search_items(obs.engine, query, language=language, limit=limit, sentiment=sentiment, platform=platform)
    for hit in hits:
        click.echo(f"{hit['id']:>8} {hit['language'] or '-':4} {hit['config']:10} {hit['sentiment_label'] or '-':8} "
                   f"{hit['rank']:.3f}  {hit['title']}")  # fmt: skip
    return 0


@click.command("events")
@limit_option(20, "at most this many events")
@pass_observatory
def events(obs: Observatory, limit: int) -> int:
    """The largest events, with their mood.

    Mood is the mean sentiment score; -/=/+ counts negative, neutral and positive items."""
    with obs.engine.connect() as conn:
        rows = largest_events(conn, limit)
    click.echo(f"{'event':>7} {'items':>6} {'sources':>7}  {'first seen':16}  {'last seen':16}  {'mood':>6} "
               f"{'-/=/+':>11}  title")  # fmt: skip
    for r in rows:
        mood = "-" if r.mean_score is None else f"{r.mean_score:+.2f}"
        balance = f"{r.negative or 0}/{r.neutral or 0}/{r.positive or 0}"
        click.echo(f"{r.id:>7} {r.item_count:>6} {r.source_count:>7}  {r.first_seen_at:%Y-%m-%d %H:%M}  "
                   f"{r.last_seen_at:%Y-%m-%d %H:%M}  {mood:>6} {balance:>11}  {r.title or ''}")  # fmt: skip
    return 0


COMMANDS = (enrich, search, events)
