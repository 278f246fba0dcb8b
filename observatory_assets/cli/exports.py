"""``observatory export items|network|list``."""

from __future__ import annotations

import json

from sqlalchemy import text

from observatory_assets.cli.runner import engine_and_store
from observatory_assets.defs.exports.delivery import CONTENT_FORMATS, ExportResult, export_content, export_network
from observatory_assets.defs.exports.filters import filters_from
from observatory_assets.defs.exports.network import MAX_AUTHORS_PER_CONTEXT, PSEUDONYM_KEY_VARIABLE

# ---------------------------------------------------------------- CLI


def _add_filter_arguments(parser) -> None:
    parser.add_argument("--from", dest="published_from", help="published at or after (ISO date/date-time, UTC)")
    parser.add_argument("--to", dest="published_to", help="published before (ISO date/date-time, UTC)")
    parser.add_argument("--source", dest="sources", action="append", default=[], help="source name (repeatable)")
    parser.add_argument("--arena", dest="arenas", action="append", default=[], help="arena (repeatable)")
    parser.add_argument("--language", dest="languages", action="append", default=[], help="language code (repeatable)")
    parser.add_argument("--query-design", dest="query_designs", action="append", default=[], help="query design name")
    parser.add_argument(
        "--run", dest="collection_runs", action="append", type=int, default=[], help="collection run id"
    )
    parser.add_argument("--term", dest="search_terms", action="append", default=[], help="matched search term")
    parser.add_argument("--query", dest="text_query", help="full-text query (web-search syntax)")
    parser.add_argument("--request-id", help="reuse to replace an earlier export's files (default: a new id)")


def _print_results(results: list[ExportResult]) -> None:
    for r in results:
        print(json.dumps({
            "export_id": r.export_id, "format": r.format, "records": r.record_count, "bytes": r.size,
            "sha256": r.sha256, "object_key": r.object_key, "download": r.download_url, **r.details,
        }, ensure_ascii=False))  # fmt: skip


def cmd_export_items(args) -> int:

    filters = filters_from(args)
    engine, store = engine_and_store()
    results = export_content(
        engine, store, filters, args.formats or CONTENT_FORMATS, request_id=args.request_id,
        include_metadata=args.metadata, actor="cli",
    )  # fmt: skip
    _print_results(results)
    return 0


def cmd_export_network(args) -> int:

    filters = filters_from(args)
    engine, store = engine_and_store()
    result, _ = export_network(
        engine, store, filters, request_id=args.request_id, pseudonymize=args.pseudonymize,
        dynamic=args.dynamic, max_authors_per_context=args.max_authors_per_context, actor="cli",
    )  # fmt: skip
    _print_results([result])
    return 0


def cmd_export_list(args) -> int:

    engine, _ = engine_and_store()
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT id, request_id, format, status, record_count, object_key, created_at "
                "FROM exports ORDER BY id DESC LIMIT :limit"
            ),
            {"limit": args.limit},
        ).all()
    for row in rows:
        print(f"{row.id:>6} {row.format:8} {row.status:10} {row.record_count if row.record_count is not None else '-':>9} "
              f"{row.created_at:%Y-%m-%d %H:%M} {row.object_key}")  # fmt: skip
    return 0


def register_commands(subparsers) -> None:
    """``observatory export items|network|list``."""
    export = subparsers.add_parser("export", help="export items (CSV, XLSX, NDJSON, Parquet) or a GEXF network")
    actions = export.add_subparsers(dest="export_command", required=True)

    items = actions.add_parser("items", help="the filtered items as files in object storage")
    items.add_argument("--format", dest="formats", action="append", choices=CONTENT_FORMATS,
                       help="repeatable; default: all four")  # fmt: skip
    items.add_argument("--metadata", action="store_true", help="add the metadata JSON column")
    _add_filter_arguments(items)
    items.set_defaults(func=cmd_export_items)

    network = actions.add_parser("network", help="the actor co-occurrence network as GEXF 1.3")
    network.add_argument("--pseudonymize", action="store_true", help=f"keyed pseudonyms ({PSEUDONYM_KEY_VARIABLE})")
    network.add_argument("--dynamic", action="store_true", help="time spans on nodes and edges")
    network.add_argument("--max-authors-per-context", type=int, default=MAX_AUTHORS_PER_CONTEXT)
    _add_filter_arguments(network)
    network.set_defaults(func=cmd_export_network)

    listing = actions.add_parser("list", help="recent exports")
    listing.add_argument("--limit", type=int, default=20)
    listing.set_defaults(func=cmd_export_list)
