"""``observatory sources sync | list | show | poll | set-credibility`` and ``observatory designs list``."""

from __future__ import annotations

import argparse
import json

from observatory_assets.cli.runner import engine_and_store, run_job
from observatory_assets.cli.trends import cmd_set_credibility
from observatory_assets.defs.collection.catalog import (
    design_states,
    load_catalog,
    source_states,
    sources_dir,
    sync_catalog,
)

LISTED = (
    "name", "url", "active", "etag", "last_modified", "last_status", "last_checked_at", "next_check_at",
    "error_count", "last_error",
)  # fmt: skip


def sync_sources(engine, directory: str | None = None):
    """Load and sync the catalog in ``directory`` (default ``OBSERVATORY_SOURCES_DIR``); what changed."""
    catalog = load_catalog(sources_dir(directory))
    with engine.begin() as conn:
        return sync_catalog(conn, catalog)


def cmd_sync(args: argparse.Namespace) -> int:
    engine, _ = engine_and_store()
    result = sync_sources(engine, args.dir)
    print(f"{result.sources} sources and {result.designs} designs synced from {sources_dir(args.dir)}")
    if result.deactivated:
        print(f"deactivated (no longer in the catalog): {', '.join(result.deactivated)}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    engine, _ = engine_and_store()
    with engine.connect() as conn:
        states = source_states(conn)
    if args.json:
        for state in states:
            print(json.dumps({key: state[key] for key in LISTED}, ensure_ascii=False))
        return 0
    for s in states:
        status = s["last_status"] or "-"
        errors = f"  {s['error_count']} errors: {s['last_error']}" if s["error_count"] else ""
        print(
            f"{s['name']:24} {'active' if s['active'] else 'inactive':8} {status!s:4} next {s['next_check_at'] or 'now'}{errors}"
        )
    if not states:
        print("no sources: write a catalog in sources/ and run `observatory sources sync`")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    engine, _ = engine_and_store()
    with engine.connect() as conn:
        states = source_states(conn, args.name)
    if not states:
        raise ValueError(f"no catalog source named {args.name!r} (see `observatory sources list`)")
    print(json.dumps(states[0], ensure_ascii=False, indent=2))
    return 0


def poll_once(force: bool) -> dict:
    """One polling cycle, in-process through Dagster and recorded in its instance; the run's outcome with
    the cycle's report as ``output``."""
    import dagster as dg

    from resources.embedded import prepare_dagster_home

    engine_and_store()
    prepare_dagster_home()
    with dg.DagsterInstance.get() as instance:
        return run_job(
            instance, "poll_sources_job", ops_config={"poll_sources": {"force": force}}, output_of="poll_sources"
        )


def cmd_poll(args: argparse.Namespace) -> int:
    outcome = poll_once(args.now)
    if not outcome["success"]:
        print(f"observatory: polling failed: {outcome['error']}")
        return 1
    report = outcome["output"]
    print(
        f"{report['due']} sources due: {report['requests_sent']} requests, {report['not_modified']} not modified (304), "
        f"{report['changed']} changed, {report['errors']} errors; {report['items_collected']} items collected"
    )
    for design, run_id in report["runs"].items():
        print(f"  collection run {run_id} for {design}")
    for reason in report["shortfalls"]:
        print(f"  skipped: {reason}")
    return 0


def cmd_designs_list(args: argparse.Namespace) -> int:
    engine, _ = engine_and_store()
    with engine.connect() as conn:
        designs = design_states(conn)
    for design in designs:
        if args.json:
            print(json.dumps(design, ensure_ascii=False))
        else:
            budget = "no budget" if design["budget"] is None else f"budget {design['budget']:g}"
            print(f"{design['name']:24} {design['title']} — {len(design['sources'])} sources, {budget}")
    return 0


def register_commands(subparsers) -> None:
    """``observatory sources …`` and ``observatory designs list``."""
    sources = subparsers.add_parser("sources", help="the source catalog (sources/ YAML) and its polling")
    sub = sources.add_subparsers(dest="sources_command", required=True)
    sync = sub.add_parser("sync", help="load the catalog (sources and designs) into the database, idempotently")
    sync.add_argument("--dir", help="catalog directory (default OBSERVATORY_SOURCES_DIR or ./sources)")
    sync.set_defaults(func=cmd_sync)
    listing = sub.add_parser("list", help="every catalog source with its polling state")
    listing.add_argument("--json", action="store_true", help="one JSON object per source")
    listing.set_defaults(func=cmd_list)
    show = sub.add_parser("show", help="one source's catalog fields and polling state (JSON)")
    show.add_argument("name")
    show.set_defaults(func=cmd_show)
    poll = sub.add_parser("poll", help="one polling cycle now, in-process through Dagster")
    poll.add_argument("--now", action="store_true", help="treat every active source as due (not a host's Retry-After)")
    poll.set_defaults(func=cmd_poll)
    rate = sub.add_parser("set-credibility", help="set a source's credibility (0-1) for trend evidence")
    rate.add_argument("name")
    rate.add_argument("credibility", type=float)
    rate.set_defaults(func=cmd_set_credibility)

    designs = subparsers.add_parser("designs", help="query designs (from the sources/ catalog)")
    designs_sub = designs.add_subparsers(dest="designs_command", required=True)
    design_list = designs_sub.add_parser("list", help="every query design")
    design_list.add_argument("--json", action="store_true", help="one JSON object per design")
    design_list.set_defaults(func=cmd_designs_list)
