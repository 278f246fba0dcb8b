"""Trends assets: ``trend_evidence`` and ``trend_snapshots``, with their checks."""

from datetime import UTC, date, datetime, timedelta

import dagster as dg
from pydantic import Field

from observatory_assets.defs.trends.catalog import sync_trends, trend_names, trends_dir
from observatory_assets.defs.trends.charts import CHART_DAYS, biggest_moves, store_charts
from observatory_assets.defs.trends.evidence import update_evidence
from observatory_assets.defs.trends.integrity import check_snapshots_match_ledger, check_yesterday_snapshots
from observatory_assets.defs.trends.ledger import (
    check_state_matches_ledger,
    evidence_totals,
    trends_without_snapshot,
    write_snapshots,
)
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
                    metadata={"restated_rows": rows},
                )
            )
    with engine.connect() as conn:
        live, retracted, active = evidence_totals(conn)
    names = trend_names(engine)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": live,
            "retracted_rows_total": retracted,
            "trends_dir": dg.MetadataValue.path(str(folder)),
            "active_trends": active,
            "trends_added": ", ".join(synced.added) or "—",
            "trends_changed": ", ".join(synced.changed) or "—",
            "trends_deactivated": ", ".join(synced.deactivated) or "—",
            "bad_trend_files": dg.MetadataValue.md("\n".join(f"- {e}" for e in synced.errors) or "_none_"),
            "events_examined": result.events_examined,
            "evidence_added": result.added,
            "evidence_updated": result.updated,
            "evidence_retracted": result.retracted,
            "affected_days": dg.MetadataValue.md(
                markdown_table([{"trend": names.get(t, t), "from day": d} for t, d in result.affected_days])
            ),
            "snapshot_days_restated": len(result.restated),
            "seconds": round(result.seconds, 3),
            "events_per_second": round(result.events_examined / max(result.seconds, 1e-9), 1),
        }
    )


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
        missing_previous = [trend_id for trend_id, _ in trends_without_snapshot(conn, previous)]
    if missing_previous and previous >= trend_days.start.date():
        # The day's move is against the day before: snapshot it from the ledger where it was never written.
        write_snapshots(engine, [previous], missing_previous)
    written = write_snapshots(engine, days)
    charts = store_charts(engine, store, days[-1])
    moves = biggest_moves(engine, days[-1])
    shown = [c for m in moves[:INLINE_CHARTS] for c in charts if c.trend == m["trend"]]
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": written.written + written.restated + written.unchanged,
            "days": f"{days[0]} … {days[-1]}" if len(days) > 1 else str(days[0]),
            "rows_written": written.written,
            "rows_restated": written.restated,
            "rows_unchanged": written.unchanged,
            "biggest_moves": dg.MetadataValue.md(markdown_table(moves)),
            "charts": dg.MetadataValue.md(
                "\n\n".join(f"**{c.trend}** (`{c.key}`)\n\n![{c.trend}]({c.data_uri()})" for c in shown)
                or "_no active trends_"
            ),
            "chart_keys": ", ".join(c.key for c in charts) or "—",
        }
    )


@dg.asset_check(asset=trend_evidence, description="trends.current_log_odds equals the ledger recomputed.")
def trend_state_matches_ledger(postgres: PostgresResource) -> dg.AssetCheckResult:
    found = check_state_matches_ledger(postgres.get_engine())
    return dg.AssetCheckResult(
        passed=found["trends_off_ledger"] == 0,
        metadata={**found, "examples": "; ".join(found["examples"]) or "—"},
    )


@dg.asset_check(asset=trend_snapshots, description="The run's snapshot rows equal the ledger recomputed.")
def snapshots_match_ledger(context: dg.AssetCheckExecutionContext, postgres: PostgresResource) -> dg.AssetCheckResult:
    window = trend_days.time_window_for_partition_key(context.partition_key) if context.has_partition_key else None
    days = [window.start.date()] if window else [datetime.now(UTC).date()]
    found = check_snapshots_match_ledger(postgres.get_engine(), days)
    return dg.AssetCheckResult(passed=found["snapshots_off_ledger"] == 0, metadata=found)


@dg.asset_check(asset=trend_snapshots, description="Yesterday (UTC) has a snapshot for every active trend.")
def yesterday_snapshot_exists(postgres: PostgresResource) -> dg.AssetCheckResult:
    found = check_yesterday_snapshots(postgres.get_engine(), datetime.now(UTC).date())
    return dg.AssetCheckResult(passed=found["trends_missing"] == 0, metadata=found)
