"""``observatory trends list | show | explain | sync | update`` and ``observatory sources set-credibility``."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime

from sqlalchemy import text

from observatory_assets.cli.runner import engine_and_store, run_job
from observatory_assets.defs.trends.catalog import set_source_credibility, sync_trends, trends_dir
from observatory_assets.defs.trends.ledger import day_end, explain_trend, probability


def _print_sync(result) -> None:
    for label, names in (("added", result.added), ("changed", result.changed), ("deactivated", result.deactivated)):
        if names:
            print(f"{label}: {', '.join(names)}")
    print(f"{len(result.added) + len(result.changed) + len(result.unchanged)} trends loaded, "
          f"{len(result.errors)} bad files")  # fmt: skip


def cmd_sync(args: argparse.Namespace) -> int:
    engine, _ = engine_and_store()
    result = sync_trends(engine, args.dir)
    _print_sync(result)
    for line in result.errors:
        print(f"observatory: {line}", file=sys.stderr)
    return 1 if result.errors else 0


def cmd_list(args: argparse.Namespace) -> int:
    engine, _ = engine_and_store()
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT t.name, t.title, t.active, t.current_log_odds, t.baseline_probability, "
                "(SELECT count(*) FROM trend_evidence e WHERE e.trend_id = t.id AND e.retracted_at IS NULL) AS n "
                "FROM trends t ORDER BY t.active DESC, t.name"
            )
        ).all()
    print(f"{'trend':32} {'p':>6} {'base':>6} {'evidence':>8}  title")
    for r in rows:
        state = "" if r.active else " (inactive)"
        print(f"{r.name:32} {probability(r.current_log_odds):6.3f} {r.baseline_probability:6.3f} {r.n:8}  "
              f"{r.title}{state}")  # fmt: skip
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    engine, _ = engine_and_store()
    report = explain_trend(engine, args.name)
    with engine.connect() as conn:
        trend = conn.execute(
            text("SELECT question, horizon, half_life_hours, source_file, active FROM trends WHERE name = :n"),
            {"n": args.name},
        ).one()
        days = conn.execute(
            text(
                "SELECT s.snapshot_date, s.probability, s.first_probability, s.evidence_count FROM trend_snapshots s "
                "JOIN trends t ON t.id = s.trend_id WHERE t.name = :n ORDER BY 1 DESC LIMIT 14"
            ),
            {"n": args.name},
        ).all()
    print(f"{report['trend']}: {report['title']}{'' if trend.active else ' (inactive)'}")
    print(f"  question: {trend.question}")
    print(f"  horizon: {trend.horizon or '—'}, half-life {trend.half_life_hours / 24:g} days, file {trend.source_file}")
    print(f"  probability {report['probability']:.3f} (baseline {report['baseline_probability']:.3f})")
    for d in days:
        restated = f" (first written {d.first_probability:.3f})" if d.first_probability != d.probability else ""
        print(f"  {d.snapshot_date}  {d.probability:.3f}{restated}  {d.evidence_count} evidence")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    engine, _ = engine_and_store()
    at = day_end(datetime.strptime(args.at, "%Y-%m-%d").date()) if args.at else datetime.now(UTC)
    report = explain_trend(engine, args.name, at)
    if args.json:
        print(json.dumps(report, ensure_ascii=False, indent=2))
        return 0
    print(f"{report['trend']}: probability {report['probability']:.3f} (log-odds {report['log_odds']:+.3f}, "
          f"baseline {report['baseline_probability']:.3f}) as of {report['as_of']}")  # fmt: skip
    for e in report["evidence"][: args.limit]:
        flag = "RETRACTED " if e["retracted"] else ""
        print(f"  {flag}{e['at'][:10]} {e['delta_log_odds']:+.3f}  {e['reasoning']}")
    return 0


def cmd_update(args: argparse.Namespace) -> int:
    import dagster as dg

    from resources.embedded import prepare_dagster_home

    prepare_dagster_home()
    today = datetime.now(UTC).date().isoformat()
    with dg.DagsterInstance.get() as instance:
        outcome = run_job(
            instance, "update_trends", partition_key=today,
            ops_config={"trend_evidence": {"trends_dir": str(trends_dir(args.dir))}},
        )  # fmt: skip
    print(f"update_trends {today}: {'ok' if outcome['success'] else 'FAILED'} (dagster run {outcome['dagster_run']})")
    if outcome["success"]:
        cmd_list(args)
    return 0 if outcome["success"] else 1


def cmd_set_credibility(args: argparse.Namespace) -> int:
    engine, _ = engine_and_store()
    changed = set_source_credibility(engine, {args.name: args.credibility})
    print(f"{args.name}: credibility {args.credibility:g}" + ("" if changed else " (unchanged)"))
    return 0


def register_commands(subparsers) -> None:
    """``observatory trends …`` (``observatory sources set-credibility`` is registered with the other
    ``sources`` commands, in :mod:`observatory_assets.cli.collection`)."""
    trends = subparsers.add_parser("trends", help="trend definitions, evidence, probabilities and explanations")
    sub = trends.add_subparsers(dest="trends_command", required=True)
    sub.add_parser("list", help="every trend with its probability").set_defaults(func=cmd_list)
    show = sub.add_parser("show", help="a trend's definition and its recent snapshots")
    show.add_argument("name")
    show.set_defaults(func=cmd_show)
    explain = sub.add_parser("explain", help="the evidence behind a trend's probability")
    explain.add_argument("name")
    explain.add_argument("--at", help="as of the end of this UTC day (YYYY-MM-DD); default now")
    explain.add_argument("--json", action="store_true", help="machine-readable (a stable shape for scripts)")
    explain.add_argument("--limit", type=int, default=20)
    explain.set_defaults(func=cmd_explain)
    for name, func, text_ in (("sync", cmd_sync, "load the trend files (upsert by name, deactivate removed ones)"),
                              ("update", cmd_update, "evidence and today's snapshot, in-process through Dagster")):  # fmt: skip
        command = sub.add_parser(name, help=text_)
        command.add_argument("--dir", help="trend directory (default OBSERVATORY_TRENDS_DIR or ./trends)")
        command.set_defaults(func=func)
