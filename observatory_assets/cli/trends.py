"""``observatory trends list | show | explain | sync | update`` and ``observatory sources set-credibility``."""

from __future__ import annotations

import json
import sys
from datetime import UTC, date, datetime

import click

from observatory_assets.cli.context import UTC_DAY, Observatory, json_option, limit_option, pass_observatory
from observatory_assets.cli.runner import run_job
from observatory_assets.defs.trends.catalog import set_source_credibility, sync_trends, trends_dir
from observatory_assets.defs.trends.ledger import day_end, explain_trend, trend_history, trend_states

_DIR = click.option("--dir", "directory", help="trend directory (default OBSERVATORY_TRENDS_DIR or ./trends)")


@click.group("trends")
def trends() -> None:
    """Trend definitions, evidence, probabilities and explanations."""


@trends.command("list")
@pass_observatory
def list_trends(obs: Observatory) -> int:
    """Every trend with its probability."""
    with obs.engine.connect() as conn:
        states = trend_states(conn)
    click.echo(f"{'trend':32} {'p':>6} {'base':>6} {'evidence':>8}  title")
    for t in states:
        click.echo(f"{t['name']:32} {t['probability']:6.3f} {t['baseline']:6.3f} {t['evidence']:8}  "
                   f"{t['title']}{'' if t['active'] else ' (inactive)'}")  # fmt: skip
    return 0


@trends.command("show")
@click.argument("name")
@pass_observatory
def show(obs: Observatory, name: str) -> int:
    """A trend's definition and its recent snapshots."""
    report = explain_trend(obs.engine, name)
    with obs.engine.connect() as conn:
        trend, days = trend_history(conn, name)
    click.echo(f"{report['trend']}: {report['title']}{'' if trend.active else ' (inactive)'}")
    click.echo(f"  question: {trend.question}")
    click.echo(f"  horizon: {trend.horizon or '—'}, half-life {trend.half_life_hours / 24:g} days, "
               f"file {trend.source_file}")  # fmt: skip
    click.echo(f"  probability {report['probability']:.3f} (baseline {report['baseline_probability']:.3f})")
    for d in days:
        restated = f" (first written {d.first_probability:.3f})" if d.first_probability != d.probability else ""
        click.echo(f"  {d.snapshot_date}  {d.probability:.3f}{restated}  {d.evidence_count} evidence")
    return 0


@trends.command("explain")
@click.argument("name")
@click.option("--at", type=UTC_DAY, help="as of the end of this UTC day (default now)")
@json_option("machine-readable (a stable shape for scripts)")
@limit_option(20, "show at most this many pieces of evidence")
@pass_observatory
def explain(obs: Observatory, name: str, at: date | None, as_json: bool, limit: int) -> int:
    """The evidence behind a trend's probability, largest first."""
    report = explain_trend(obs.engine, name, day_end(at) if at else datetime.now(UTC))
    if as_json:
        click.echo(json.dumps(report, ensure_ascii=False, indent=2))
        return 0
    click.echo(f"{report['trend']}: probability {report['probability']:.3f} (log-odds {report['log_odds']:+.3f}, "
               f"baseline {report['baseline_probability']:.3f}) as of {report['as_of']}")  # fmt: skip
    for e in report["evidence"][:limit]:
        flag = "RETRACTED " if e["retracted"] else ""
        click.echo(f"  {flag}{e['at'][:10]} {e['delta_log_odds']:+.3f}  {e['reasoning']}")
    return 0


@trends.command("sync")
@_DIR
@pass_observatory
def sync(obs: Observatory, directory: str | None) -> int:
    """Load the trend files (upsert by name, deactivate removed ones)."""
    result = sync_trends(obs.engine, directory)
    for label, names in (("added", result.added), ("changed", result.changed), ("deactivated", result.deactivated)):
        if names:
            click.echo(f"{label}: {', '.join(names)}")
    click.echo(f"{len(result.added) + len(result.changed) + len(result.unchanged)} trends loaded, "
               f"{len(result.errors)} bad files")  # fmt: skip
    for line in result.errors:
        print(f"observatory: {line}", file=sys.stderr)
    return 1 if result.errors else 0


@trends.command("update")
@_DIR
@click.pass_context
@pass_observatory
def update(obs: Observatory, ctx: click.Context, directory: str | None) -> int:
    """Evidence and today's snapshot, in-process through Dagster."""
    today = datetime.now(UTC).date().isoformat()
    outcome = run_job(
        obs.instance, "update_trends", partition_key=today,
        ops_config={"trend_evidence": {"trends_dir": str(trends_dir(directory))}},
    )  # fmt: skip
    click.echo(f"update_trends {today}: {'ok' if outcome['success'] else 'FAILED'} "
               f"(dagster run {outcome['dagster_run']})")  # fmt: skip
    if outcome["success"]:
        ctx.invoke(list_trends)
    return 0 if outcome["success"] else 1


@click.command("set-credibility")
@click.argument("name")
@click.argument("credibility", type=float)
@pass_observatory
def set_credibility(obs: Observatory, name: str, credibility: float) -> int:
    """Set source NAME's credibility (0-1) for trend evidence."""
    changed = set_source_credibility(obs.engine, {name: credibility})
    click.echo(f"{name}: credibility {credibility:g}" + ("" if changed else " (unchanged)"))
    return 0


#: ``set-credibility`` is among the ``sources`` commands (:mod:`observatory_assets.cli.collection`).
COMMANDS = (trends,)
