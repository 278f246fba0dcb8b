"""``observatory collect``, ``ingest`` and ``status``."""

from __future__ import annotations

import json

import click

from observatory_assets.cli.context import Observatory, json_option, pass_observatory
from observatory_assets.cli.runner import ingest_runs, register_partitions
from observatory_assets.defs.ingestion.collect import SourceRequest, collect, guess_format, run_status
from observatory_assets.defs.ingestion.records import FORMATS


@click.command("collect")
@click.option("--file", "path", metavar="PATH", help="a payload file (give --file or --url)")
@click.option("--url", help="a feed URL (give --file or --url)")
@click.option("--source", required=True, help="source name")
@click.option("--format", "fmt", type=click.Choice(FORMATS), help="default: guessed from the file name or URL")
@pass_observatory
def collect_command(obs: Observatory, path: str | None, url: str | None, source: str, fmt: str | None) -> int:
    """Create a collection run from a file or URL; prints its id."""
    if (path is None) == (url is None):
        raise click.UsageError("give exactly one of --file or --url")
    request = SourceRequest(source, fmt or guess_format(path or url), path=path, url=url)
    run_id = collect(obs.engine, obs.store, [request])
    register_partitions(obs.instance, [run_id])
    click.echo(run_id)
    return 0


@click.command("ingest")
@click.option("--run", type=int, help="only this collection run")
@click.option("--force", is_flag=True, help="parse and load again even if already loaded")
@pass_observatory
def ingest(obs: Observatory, run: int | None, force: bool) -> int:
    """Ingest completed collection runs through Dagster now.

    Without --run: every completed run waiting for ingestion, those the sensor gave up on included."""
    outcomes = ingest_runs(obs, [run] if run else None, force=force)
    for outcome in outcomes:
        state = "ok" if outcome["success"] else f"FAILED: {outcome['error']}"
        click.echo(f"collection run {outcome['collection_run']}: {state} (dagster run {outcome['dagster_run']})")
    if not outcomes:
        click.echo("no completed collection runs waiting for ingestion")
    return 0 if all(o["success"] for o in outcomes) else 1


@click.command("status")
@json_option('{"runs": [...], "totals": {...}}: scripts check totals.accounted_for')
@pass_observatory
def status(obs: Observatory, as_json: bool) -> int:
    """Collection runs and their counts."""
    with obs.engine.connect() as conn:
        report = run_status(conn)
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return 0
    click.echo(f"{'run':>5} {'status':10} {'delivered':>9} {'loaded':>7} {'dups':>6} {'rejected':>8}")
    for r in report["runs"]:
        click.echo(f"{r['id']:>5} {r['status']:10} {r['delivered']:>9} {r['loaded']:>7} {r['duplicates']:>6} "
                   f"{r['rejected']:>8}")  # fmt: skip
    t = report["totals"]
    click.echo(f"{'all':>5} {'':10} {t['delivered']:>9} {t['loaded']:>7} {t['duplicates']:>6} {t['rejected']:>8}")
    return 0


COMMANDS = (collect_command, ingest, status)
