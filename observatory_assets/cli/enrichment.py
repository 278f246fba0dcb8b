"""``observatory enrich``, ``search`` and ``events``."""

from __future__ import annotations

import dagster as dg
from sqlalchemy import text

from observatory_assets.cli.runner import engine_and_store, materialize_enrichment_and_events, register_partitions
from observatory_assets.defs.enrichment.assets import EmbedderResource
from observatory_assets.defs.enrichment.features import search_items
from observatory_assets.defs.enrichment.sentiment import LABELS
from observatory_assets.lib.statuses import ProcessingStatus

# ---------------------------------------------------------------- CLI

_RUNS_TO_ENRICH = """
SELECT DISTINCT r.collection_run_id
  FROM raw_items r LEFT JOIN item_embeddings e ON e.item_id = r.id
 WHERE r.processing_status = :loaded OR e.item_id IS NULL OR e.embedder <> :embedder
 ORDER BY 1
"""


def cmd_enrich(args) -> int:
    from resources.embedded import prepare_dagster_home

    engine, _ = engine_and_store()
    if args.run:
        run_ids = [args.run]
    else:
        with engine.connect() as conn:
            name = EmbedderResource.from_env().get_embedder(engine).name
            params = {"embedder": name, "loaded": ProcessingStatus.LOADED}
            run_ids = list(conn.execute(text(_RUNS_TO_ENRICH), params).scalars())
    register_partitions(run_ids)
    prepare_dagster_home()
    with dg.DagsterInstance.get() as instance:
        outcomes = materialize_enrichment_and_events(instance, run_ids)
    for o in outcomes:
        what = f"collection run {o['collection_run']}" if o["collection_run"] is not None else "events"
        print(f"{o['job']:24} {what}: {'ok' if o['success'] else 'FAILED'} (dagster run {o['dagster_run']})")
    return 0 if all(o["success"] for o in outcomes) else 1


def cmd_search(args) -> int:

    engine, _ = engine_and_store()
    for hit in search_items(
        engine, args.query, language=args.language, limit=args.limit, sentiment=args.sentiment, platform=args.platform
    ):
        print(
            f"{hit['id']:>8} {hit['language'] or '-':4} {hit['config']:10} {hit['sentiment_label'] or '-':8} "
            f"{hit['rank']:.3f}  {hit['title']}"
        )
    return 0


def cmd_events(args) -> int:

    engine, _ = engine_and_store()
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT e.id, e.item_count, e.source_count, e.first_seen_at, e.last_seen_at, e.title, "
                "s.mean_score, s.negative, s.neutral, s.positive FROM events e "
                "LEFT JOIN event_sentiment s ON s.event_id = e.id "
                "ORDER BY e.item_count DESC, e.last_seen_at DESC LIMIT :limit"
            ),
            {"limit": args.limit},
        ).all()
    print(f"{'event':>7} {'items':>6} {'sources':>7}  {'first seen':16}  {'last seen':16}  {'mood':>6} "
          f"{'-/=/+':>11}  title")  # fmt: skip
    for r in rows:
        mood = "-" if r.mean_score is None else f"{r.mean_score:+.2f}"
        balance = f"{r.negative or 0}/{r.neutral or 0}/{r.positive or 0}"
        print(f"{r.id:>7} {r.item_count:>6} {r.source_count:>7}  {r.first_seen_at:%Y-%m-%d %H:%M}  "
              f"{r.last_seen_at:%Y-%m-%d %H:%M}  {mood:>6} {balance:>11}  {r.title or ''}")  # fmt: skip
    return 0


def register_commands(subparsers) -> None:
    """``observatory enrich``, ``observatory search`` and ``observatory events``."""
    enrich = subparsers.add_parser("enrich", help="features, embeddings and events for ingested runs, through Dagster")
    enrich.add_argument("--run", type=int, help="only this collection run (default: every run with items to enrich)")
    enrich.set_defaults(func=cmd_enrich)

    search = subparsers.add_parser("search", help="full-text search of items (per-language stemming)")
    search.add_argument("query", help='websearch syntax: words, "a phrase", -excluded, or')
    search.add_argument("--language", help="only items of this language (ISO code, e.g. da)")
    search.add_argument("--sentiment", choices=LABELS, help="only items of this sentiment label")
    search.add_argument("--platform", help="only items of this platform (e.g. reddit, bluesky, rss)")
    search.add_argument("--limit", type=int, default=20)
    search.set_defaults(func=cmd_search)

    listing = subparsers.add_parser("events", help="the largest events")
    listing.add_argument("--limit", type=int, default=20)
    listing.set_defaults(func=cmd_events)
