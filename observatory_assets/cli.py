"""``observatory``: what Dagster itself does not do.

Start the embedded services, migrate, write demo data, create collection runs
from feeds or files, ingest completed runs through Dagster without a daemon,
report run status, and run the whole demo.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

from resources.settings import ENVIRONMENT, mask_dsn, platform_settings

SAMPLE_DIR = Path(__file__).resolve().parent / "sample_data"

#: Domain modules that add their own subcommands through ``register_commands(subparsers)``.
COMMAND_MODULES: list[str] = ["observatory_assets.backups", "observatory_assets.exports", "observatory_assets.events"]


def engine_and_store():
    """The database engine and object store, configured as the Dagster resources are."""
    from resources import observatory_resources

    resources = {name: r.process_config_and_initialize() for name, r in observatory_resources().items()}
    return resources["postgres"].get_engine(), resources["object_store"].get_store()


def cmd_services(args: argparse.Namespace) -> int:
    from resources.embedded import prepare_dagster_home, resolve_database_urls, stop_embedded_postgres

    settings = platform_settings()
    if args.action == "stop":
        if settings.embedded_database:
            stopped = stop_embedded_postgres(settings.pgdata)
            print("embedded Postgres stopped" if stopped else "embedded Postgres was not running")
        return 0
    app_url, dagster_url = resolve_database_urls(settings)
    home = prepare_dagster_home(settings)
    print(f"database:        {mask_dsn(app_url)}")
    print(f"dagster storage: {mask_dsn(dagster_url)}")
    print(f"DAGSTER_HOME:    {home}")
    print(f"objects:         {settings.objects_root if settings.embedded_object_store else settings.s3_endpoint}")
    return 0


def cmd_env(args: argparse.Namespace) -> int:
    """Print `export DAGSTER_HOME=...` for shells that run the dagster CLI directly."""
    from resources.embedded import prepare_dagster_home

    print(f"export DAGSTER_HOME={prepare_dagster_home()}")
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from observatory_assets import schema
    from resources.embedded import resolve_database_urls

    url = resolve_database_urls()[0]
    schema.upgrade(url, args.revision)
    print(f"migrated {mask_dsn(url)} to {args.revision}")
    return 0


def cmd_demo_data(args: argparse.Namespace) -> int:
    from observatory_assets.demo_data import iter_items, write_demo_dataset, write_jsonl

    out = Path(args.out)
    if args.n:
        out.parent.mkdir(parents=True, exist_ok=True)
        count = write_jsonl(out, iter_items(args.n, seed=args.seed))
        print(f"wrote {count} items to {out}")
    else:
        for name, fmt, path in write_demo_dataset(out, seed=args.seed):
            print(f"{name:15} {fmt:6} {path}")
    return 0


def cmd_collect(args: argparse.Namespace) -> int:
    from observatory_assets.collect import SourceRequest, collect, guess_format

    engine, store = engine_and_store()
    location = args.file or args.url
    request = SourceRequest(args.source, args.format or guess_format(location), path=args.file, url=args.url)
    run_id = collect(engine, store, [request])
    register_partitions([run_id])
    print(run_id)
    return 0


def register_partitions(run_ids: list[int]) -> None:
    """Make collection runs visible as ``raw_items`` partitions in the Dagster instance."""
    import dagster as dg

    from observatory_assets.ingestion import collection_run_partitions
    from resources.embedded import prepare_dagster_home

    prepare_dagster_home()
    with dg.DagsterInstance.get() as instance:
        instance.add_dynamic_partitions(collection_run_partitions.name, [str(r) for r in run_ids])


def ingest_runs(run_ids: list[int] | None = None, force: bool = False) -> list[dict]:
    """Materialize ``raw_items`` for the given (default: all completed, not yet ingested) runs
    through Dagster in-process, recorded in the Dagster instance as the sensor's runs are."""
    import dagster as dg
    from sqlalchemy import text

    engine, _ = engine_and_store()
    with engine.connect() as conn:
        if run_ids is None:
            run_ids = list(
                conn.execute(
                    text("SELECT id FROM collection_runs WHERE status = 'completed' AND ingested_at IS NULL ORDER BY id")
                ).scalars()
            )
    register_partitions(run_ids)
    with dg.DagsterInstance.get() as instance:
        return [
            run_job(instance, "ingest_collection_run", partition_key=str(run_id), ops_config={"raw_items": {"force": force}})
            for run_id in run_ids
        ]


def run_job(instance, name: str, partition_key: str | None = None, ops_config: dict | None = None) -> dict:
    """Run a job of the code location in-process, recorded in ``instance`` as the daemon's runs are,
    with console logging kept to warnings. Returns what happened, for people and scripts."""
    from observatory_assets.definitions import defs

    run_config = {
        "ops": {op: {"config": config} for op, config in (ops_config or {}).items()},
        "loggers": {"console": {"config": {"log_level": "WARNING"}}},
    }
    result = defs.resolve_job_def(name).execute_in_process(
        instance=instance, partition_key=partition_key, run_config=run_config, raise_on_error=False
    )
    return {
        "job": name,
        "collection_run": int(partition_key) if partition_key else None,
        "dagster_run": result.run_id,
        "success": result.success,
    }


def cmd_ingest(args: argparse.Namespace) -> int:
    outcomes = ingest_runs([args.run] if args.run else None, force=args.force)
    for outcome in outcomes:
        state = "ok" if outcome["success"] else "FAILED"
        print(f"collection run {outcome['collection_run']}: {state} (dagster run {outcome['dagster_run']})")
    if not outcomes:
        print("no completed collection runs waiting for ingestion")
    return 0 if all(o["success"] for o in outcomes) else 1


#: The unpartitioned jobs the demo runs after ingestion and clustering: the rest of the asset graph.
DEMO_JOBS = ("partition_rollover", "export_content_and_network", "nightly_backup", "restore_verification")


def run_status(engine) -> dict:
    """Every collection run with its counts, and totals: scripts check ``accounted_for``."""
    from sqlalchemy import text

    with engine.connect() as conn:
        rows = conn.execute(
            text(
                """
                SELECT id, status, attempt, items_collected AS delivered, items_loaded AS loaded,
                       items_duplicate AS duplicates, items_rejected AS rejected,
                       completed_at, ingested_at, payload_prefix, error
                  FROM collection_runs ORDER BY id
                """
            )
        ).mappings().all()
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
        print(f"{r['id']:>5} {r['status']:10} {r['delivered']:>9} {r['loaded']:>7} {r['duplicates']:>6} {r['rejected']:>8}")
    t = status["totals"]
    print(f"{'all':>5} {'':10} {t['delivered']:>9} {t['loaded']:>7} {t['duplicates']:>6} {t['rejected']:>8}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Services, migrations, the bundled sample collected and ingested through Dagster, a summary."""
    from sqlalchemy import text

    from observatory_assets.collect import SourceRequest, collect, guess_format
    from resources.embedded import prepare_dagster_home, resolve_database_urls

    settings = platform_settings()
    app_url, _ = resolve_database_urls(settings)
    from observatory_assets import schema

    schema.upgrade(app_url)
    home = prepare_dagster_home(settings)
    engine, store = engine_and_store()
    samples = sorted(p for p in SAMPLE_DIR.iterdir() if p.suffix in (".xml", ".atom", ".jsonl", ".csv"))
    for path in samples:
        run_id = collect(engine, store, [SourceRequest(path.stem, guess_format(path.name), path=str(path))])
        print(f"collected {path.name:24} → collection run {run_id}")
    import dagster as dg

    from observatory_assets.events import materialize_enrichment_and_events

    outcomes = ingest_runs()
    with dg.DagsterInstance.get() as instance:
        outcomes += materialize_enrichment_and_events(instance, [o["collection_run"] for o in outcomes])
        outcomes += [run_job(instance, name) for name in DEMO_JOBS]
    failed = [o for o in outcomes if not o["success"]]
    status = run_status(engine)
    with engine.connect() as conn:
        reasons = conn.execute(text("SELECT reason, count(*) FROM rejected_items GROUP BY reason ORDER BY 2 DESC")).all()
        items = conn.execute(text("SELECT count(*) FROM raw_items")).scalar_one()
        events = conn.execute(text("SELECT count(*), coalesce(max(item_count), 0) FROM events")).one()
        exported = conn.execute(text("SELECT format, record_count, object_key FROM exports WHERE status = 'completed' ORDER BY id")).all()
        backup = conn.execute(text("SELECT object_key, size_bytes, verified_at IS NOT NULL FROM backups ORDER BY id DESC LIMIT 1")).one_or_none()
    t = status["totals"]
    print()
    print("Observatory demo")
    print(f"  Dagster runs (ingest, enrich, cluster, rollover, export, backup, verify): {len(outcomes)} ({len(failed)} failed)")
    print(f"  delivered {t['delivered']} rows: {t['loaded']} loaded, {t['duplicates']} duplicates, {t['rejected']} rejected")
    print(f"  every delivered row accounted for: {t['accounted_for']}")
    print(f"  raw_items now holds {items} items, clustered into {events[0]} events (largest: {events[1]} items)")
    print("  rejects by reason: " + ", ".join(f"{r}={n}" for r, n in reasons))
    print("  exports: " + ", ".join(f"{fmt} ({count} records) {key}" for fmt, count, key in exported))
    if backup:
        print(f"  backup: {backup[0]} ({backup[1]} bytes, restore verified: {backup[2]})")
    print(f"  data:     {mask_dsn(app_url)}")
    print(f"  objects:  {settings.objects_root if settings.embedded_object_store else settings.s3_endpoint}")
    print(f"  Dagster:  DAGSTER_HOME={home} (runs, events and schedules in Postgres)")
    print("  UI:       make ui   (then open http://127.0.0.1:3000)")
    return 1 if failed or not t["accounted_for"] else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="observatory", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    services = sub.add_parser("services", help="start, stop or show the embedded services")
    services.add_argument("action", choices=["start", "stop", "status"], nargs="?", default="status")
    services.set_defaults(func=cmd_services)

    sub.add_parser("env", help="print the DAGSTER_HOME export for the dagster CLI").set_defaults(func=cmd_env)

    migrate = sub.add_parser("migrate", help="alembic upgrade the application database")
    migrate.add_argument("--revision", default="head")
    migrate.set_defaults(func=cmd_migrate)

    demo_data = sub.add_parser("demo-data", help="write the demo dataset, or --n generated JSONL items")
    demo_data.add_argument("--out", default="demo_data", help="directory (dataset) or file (--n)")
    demo_data.add_argument("--n", type=int, default=0, help="write N benchmark items as one JSONL file")
    demo_data.add_argument("--seed", type=int, default=7)
    demo_data.set_defaults(func=cmd_demo_data)

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

    sub.add_parser("demo", help="run the whole demo on the embedded defaults").set_defaults(func=cmd_demo)

    for module in COMMAND_MODULES:
        importlib.import_module(module).register_commands(sub)

    config = sub.add_parser("config", help="list the OBSERVATORY_* settings")
    config.set_defaults(func=lambda _: print("\n".join(f"{k:34} {v}" for k, v in ENVIRONMENT.items())) or 0)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as error:
        print(f"observatory: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
