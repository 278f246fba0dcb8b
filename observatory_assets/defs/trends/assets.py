"""Dagster definitions of ``trend_evidence`` and ``trend_snapshots``, their checks, the ``update_trends``
job and the ``daily_trend_snapshot`` schedule."""

from datetime import UTC, date, datetime, timedelta

import dagster as dg
from pydantic import Field
from sqlalchemy import Engine, text

from observatory_assets.defs.trends.catalog import sync_trends, trends_dir
from observatory_assets.defs.trends.charts import CHART_DAYS, biggest_moves, store_charts
from observatory_assets.defs.trends.evidence import update_evidence
from observatory_assets.defs.trends.ledger import check_state_matches_ledger, day_end, log_odds_at, write_snapshots
from observatory_assets.lib.dagster import follows, markdown_table, never_done
from resources import ObjectStoreResource, PostgresResource

TRENDS = "trends"

#: One partition per UTC day; today's exists (``end_offset=1``) so the live state can be snapshotted.
trend_days = dg.DailyPartitionsDefinition(start_date="2025-01-01", timezone="UTC", end_offset=1)

#: Charts shown inline in the materialization (every active trend's chart is stored).
INLINE_CHARTS = 5

#: Days back from today whose missing snapshot partitions automation fills: the charts' window.
SNAPSHOT_FILL_DAYS = CHART_DAYS

#: Today's snapshot follows the ledger; a missing day of the last ``SNAPSHOT_FILL_DAYS`` (nothing ran that
#: day, or the day is new) is filled from the ledger, once: a failed fill waits for a person.
snapshots_automation = (
    (
        (dg.AutomationCondition.in_latest_time_window() & follows("trend_evidence"))
        | never_done(timedelta(days=SNAPSHOT_FILL_DAYS)).with_label("missing day")
    )
    & ~dg.AutomationCondition.any_deps_missing()
).with_label("snapshots follow the ledger")


class TrendEvidenceConfig(dg.Config):
    trends_dir: str = Field(
        default="", description="Directory of the trend YAML files; default OBSERVATORY_TRENDS_DIR or ./trends."
    )


@dg.asset(
    # what the matching reads: the events, their items' text and full-text vectors, and their vectors
    deps=["events", "raw_items", "item_features", "item_embeddings"],
    group_name=TRENDS,
    kinds={"postgres"},
    automation_condition=follows("events"),
)
def trend_evidence(
    context: dg.AssetExecutionContext, config: TrendEvidenceConfig, postgres: PostgresResource
) -> dg.MaterializeResult:
    """The evidence ledger: trend files synced, every event changed since the last run matched against every
    active trend (full-text search with each language's stemming), factors (credibility, corroboration by
    independent sources, novelty, severity, per-day cap) refreshed, stale evidence retracted (vanished or
    re-clustered events, takedowns), each trend's state recomputed and the snapshots of affected past days
    restated. Incremental, idempotent, one transaction."""
    engine = postgres.get_engine()
    folder = trends_dir(config.trends_dir or None)
    synced = sync_trends(engine, folder)
    for line in synced.errors:
        context.log.error(f"trend file skipped: {line}")
    result = update_evidence(engine)
    for day, rows in result.restated.items():
        if day >= trend_days.start.date():
            context.log_event(
                dg.AssetMaterialization(
                    asset_key="trend_snapshots",
                    partition=day.isoformat(),
                    description="restated: the ledger changed for this day (retraction, late or changed evidence)",
                    metadata={"restated_rows": dg.MetadataValue.int(rows)},
                )
            )
    with engine.connect() as conn:
        live, retracted, active = conn.execute(
            text(
                "SELECT count(*) FILTER (WHERE retracted_at IS NULL), count(*) FILTER (WHERE retracted_at IS NOT NULL),"
                " (SELECT count(*) FROM trends WHERE active) FROM trend_evidence"
            )
        ).one()
    names = _trend_names(engine)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": dg.MetadataValue.int(live),
            "retracted_rows_total": dg.MetadataValue.int(retracted),
            "trends_dir": dg.MetadataValue.path(str(folder)),
            "active_trends": dg.MetadataValue.int(active),
            "trends_added": dg.MetadataValue.text(", ".join(synced.added) or "—"),
            "trends_changed": dg.MetadataValue.text(", ".join(synced.changed) or "—"),
            "trends_deactivated": dg.MetadataValue.text(", ".join(synced.deactivated) or "—"),
            "bad_trend_files": dg.MetadataValue.md("\n".join(f"- {e}" for e in synced.errors) or "_none_"),
            "events_examined": dg.MetadataValue.int(result.events_examined),
            "evidence_added": dg.MetadataValue.int(result.added),
            "evidence_updated": dg.MetadataValue.int(result.updated),
            "evidence_retracted": dg.MetadataValue.int(result.retracted),
            "affected_days": dg.MetadataValue.md(
                markdown_table([{"trend": names.get(t, t), "from day": d} for t, d in result.affected_days])
            ),
            "snapshot_days_restated": dg.MetadataValue.int(len(result.restated)),
            "seconds": dg.MetadataValue.float(round(result.seconds, 3)),
            "events_per_second": dg.MetadataValue.float(round(result.events_examined / max(result.seconds, 1e-9), 1)),
        }
    )


def _trend_names(engine: Engine) -> dict[int, str]:
    with engine.connect() as conn:
        return dict(conn.execute(text("SELECT id, name FROM trends")).all())


def _days(context: dg.AssetExecutionContext) -> list[date]:
    window = context.partition_time_window
    first, last = window.start.date(), (window.end - timedelta(days=1)).date()
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


@dg.asset(
    deps=[trend_evidence],
    partitions_def=trend_days,
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name=TRENDS,
    kinds={"postgres", "s3"},
    automation_condition=snapshots_automation,
)
def trend_snapshots(
    context: dg.AssetExecutionContext, postgres: PostgresResource, object_store: ObjectStoreResource
) -> dg.MaterializeResult:
    """One row per active trend per UTC day: log-odds and probability at the end of the day, the day's
    evidence count and biggest movers, all computed from the ledger, so a backfilled day equals the live one.
    A rewritten day keeps its first value beside the restated one. Stores each trend's 90-day chart
    (``trends/charts/<trend>.png``) and shows the largest moves with their reasoning. A backfill runs as one
    set-based statement."""
    engine, store = postgres.get_engine(), object_store.get_store()
    days = _days(context)
    previous = days[0] - timedelta(days=1)
    with engine.connect() as conn:
        missing_previous = conn.execute(
            text(
                "SELECT array_agg(id) FROM trends t WHERE active AND NOT EXISTS "
                "(SELECT 1 FROM trend_snapshots s WHERE s.trend_id = t.id AND s.snapshot_date = :d)"
            ),
            {"d": previous},
        ).scalar_one()
    if missing_previous and previous >= trend_days.start.date():
        # The day's move is against the day before: snapshot it from the ledger where it was never written.
        write_snapshots(engine, [previous], missing_previous)
    written = write_snapshots(engine, days)
    charts = store_charts(engine, store, days[-1])
    moves = biggest_moves(engine, days[-1])
    shown = [c for m in moves[:INLINE_CHARTS] for c in charts if c.trend == m["trend"]]
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": dg.MetadataValue.int(written.written + written.restated + written.unchanged),
            "days": dg.MetadataValue.text(f"{days[0]} … {days[-1]}" if len(days) > 1 else str(days[0])),
            "rows_written": dg.MetadataValue.int(written.written),
            "rows_restated": dg.MetadataValue.int(written.restated),
            "rows_unchanged": dg.MetadataValue.int(written.unchanged),
            "biggest_moves": dg.MetadataValue.md(markdown_table(moves)),
            "charts": dg.MetadataValue.md(
                "\n\n".join(f"**{c.trend}** (`{c.key}`)\n\n![{c.trend}]({c.data_uri()})" for c in shown)
                or "_no active trends_"
            ),
            "chart_keys": dg.MetadataValue.text(", ".join(c.key for c in charts) or "—"),
        }
    )


@dg.asset_check(asset=trend_evidence, description="trends.current_log_odds equals the ledger recomputed.")
def trend_state_matches_ledger(postgres: PostgresResource) -> dg.AssetCheckResult:
    found = check_state_matches_ledger(postgres.get_engine())
    return dg.AssetCheckResult(
        passed=found["trends_off_ledger"] == 0,
        metadata={**found, "examples": dg.MetadataValue.text("; ".join(found["examples"]) or "—")},
    )


def check_snapshots_match_ledger(engine: Engine, days: list[date]) -> dict:
    """Snapshot rows of ``days`` whose log-odds differs from the ledger recomputed for that day."""
    with engine.begin() as conn:
        rows = conn.execute(
            text("SELECT trend_id, snapshot_date, log_odds FROM trend_snapshots WHERE snapshot_date = ANY(:days)"),
            {"days": days},
        ).all()
        ledger = log_odds_at(conn, [(r.trend_id, day_end(r.snapshot_date)) for r in rows])
    off = [r for r in rows if abs(ledger[(r.trend_id, day_end(r.snapshot_date))] - r.log_odds) > 1e-9]
    return {"snapshots_checked": len(rows), "snapshots_off_ledger": len(off)}


@dg.asset_check(asset=trend_snapshots, description="The run's snapshot rows equal the ledger recomputed.")
def snapshots_match_ledger(context: dg.AssetCheckExecutionContext, postgres: PostgresResource) -> dg.AssetCheckResult:
    window = trend_days.time_window_for_partition_key(context.partition_key) if context.has_partition_key else None
    days = [window.start.date()] if window else [datetime.now(UTC).date()]
    found = check_snapshots_match_ledger(postgres.get_engine(), days)
    return dg.AssetCheckResult(passed=found["snapshots_off_ledger"] == 0, metadata=found)


def check_yesterday_snapshots(engine: Engine, today: date) -> dict:
    """Active trends without a snapshot for the day before ``today``."""
    with engine.connect() as conn:
        missing = conn.execute(
            text(
                "SELECT name FROM trends t WHERE active AND NOT EXISTS (SELECT 1 FROM trend_snapshots s "
                "WHERE s.trend_id = t.id AND s.snapshot_date = :d) ORDER BY name"
            ),
            {"d": today - timedelta(days=1)},
        ).scalars()
        missing = list(missing)
    return {"day": str(today - timedelta(days=1)), "trends_missing": len(missing), "examples": ", ".join(missing[:10])}


@dg.asset_check(asset=trend_snapshots, description="Yesterday (UTC) has a snapshot for every active trend.")
def yesterday_snapshot_exists(postgres: PostgresResource) -> dg.AssetCheckResult:
    found = check_yesterday_snapshots(postgres.get_engine(), datetime.now(UTC).date())
    return dg.AssetCheckResult(passed=found["trends_missing"] == 0, metadata=found)


update_trends = dg.define_asset_job(
    "update_trends",
    selection=dg.AssetSelection.assets(trend_evidence, trend_snapshots),
    description="Sync trend files, update the evidence ledger (with restatement) and snapshot the day.",
)


@dg.schedule(
    job=update_trends,
    cron_schedule="30 0 * * *",
    execution_timezone="UTC",
    name="daily_trend_snapshot",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="At 00:30 UTC: the evidence brought up to date and yesterday's final snapshot written.",
)
def daily_trend_snapshot(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    # lib.dagster.utc_schedule cannot name a partition; this is the same UTC schedule for yesterday's day.
    day = (context.scheduled_execution_time.astimezone(UTC) - timedelta(days=1)).date().isoformat()
    return dg.RunRequest(run_key=f"trend-snapshot-{day}", partition_key=day)


defs = dg.Definitions(
    assets=[trend_evidence, trend_snapshots],
    asset_checks=[trend_state_matches_ledger, snapshots_match_ledger, yesterday_snapshot_exists],
    jobs=[update_trends],
    schedules=[daily_trend_snapshot],
)
