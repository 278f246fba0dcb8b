"""``observatory collect``, ``ingest`` and ``status``."""

from __future__ import annotations

import argparse
import json

from observatory_assets.cli.runner import engine_and_store, ingest_runs, register_partitions
from observatory_assets.defs.ingestion.collect import SourceRequest, collect, guess_format


def cmd_collect(args: argparse.Namespace) -> int:

    engine, store = engine_and_store()
    location = args.file or args.url
    request = SourceRequest(args.source, args.format or guess_format(location), path=args.file, url=args.url)
    run_id = collect(engine, store, [request])
    register_partitions([run_id])
    print(run_id)
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    outcomes = ingest_runs([args.run] if args.run else None, force=args.force)
    for outcome in outcomes:
        state = "ok" if outcome["success"] else f"FAILED: {outcome['error']}"
        print(f"collection run {outcome['collection_run']}: {state} (dagster run {outcome['dagster_run']})")
    if not outcomes:
        print("no completed collection runs waiting for ingestion")
    return 0 if all(o["success"] for o in outcomes) else 1


def run_status(engine) -> dict:
    """Every collection run with its counts, and totals: scripts check ``accounted_for``."""
    from sqlalchemy import text

    with engine.connect() as conn:
        rows = (
            conn.execute(
                text(
                    """
                SELECT id, status, attempt, items_collected AS delivered, items_loaded AS loaded,
                       items_duplicate AS duplicates, items_rejected AS rejected,
                       completed_at, ingested_at, payload_prefix, error
                  FROM collection_runs ORDER BY id
                """
                )
            )
            .mappings()
            .all()
        )
    runs = []
    for row in rows:
        run = {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in row.items()}
        ingested = row["ingested_at"] is not None
        run["ingested"] = ingested
        run["accounted_for"] = ingested and row["delivered"] == row["loaded"] + row["duplicates"] + row["rejected"]
        runs.append(run)
    totals = {k: sum(r[k] for r in runs) for k in ("delivered", "loaded", "duplicates", "rejected")}
    totals["runs"] = len(runs)
    totals["accounted_for"] = all(r["accounted_for"] for r in runs if r["ingested"])
    return {"runs": runs, "totals": totals}


def cmd_status(args: argparse.Namespace) -> int:
    engine, _ = engine_and_store()
    status = run_status(engine)
    if args.json:
        print(json.dumps(status, indent=2))
        return 0
    print(f"{'run':>5} {'status':10} {'delivered':>9} {'loaded':>7} {'dups':>6} {'rejected':>8}")
    for r in status["runs"]:
        print(
            f"{r['id']:>5} {r['status']:10} {r['delivered']:>9} {r['loaded']:>7} {r['duplicates']:>6} {r['rejected']:>8}"
        )
    t = status["totals"]
    print(f"{'all':>5} {'':10} {t['delivered']:>9} {t['loaded']:>7} {t['duplicates']:>6} {t['rejected']:>8}")
    return 0


def register_commands(sub) -> None:
    """``observatory collect``, ``ingest`` and ``status``."""
    collect = sub.add_parser("collect", help="create a collection run from a file or URL; prints its id")
    where = collect.add_mutually_exclusive_group(required=True)
    where.add_argument("--file")
    where.add_argument("--url")
    collect.add_argument("--source", required=True, help="source name")
    collect.add_argument("--format", choices=["rss", "atom", "jsonl", "csv"])
    collect.set_defaults(func=cmd_collect)

    ingest = sub.add_parser("ingest", help="ingest completed collection runs through Dagster now")
    ingest.add_argument("--run", type=int, help="only this collection run")
    ingest.add_argument("--force", action="store_true", help="parse and load again even if already loaded")
    ingest.set_defaults(func=cmd_ingest)

    status = sub.add_parser("status", help="collection runs and their counts")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_status)
