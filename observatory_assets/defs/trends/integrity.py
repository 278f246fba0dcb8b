"""The invariants of trend snapshots: a day's rows equal the ledger recomputed, and yesterday is complete."""

from __future__ import annotations

from datetime import date, timedelta

from sqlalchemy import Engine, text

from observatory_assets.defs.trends.ledger import day_end, log_odds_at, trends_without_snapshot


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


def check_yesterday_snapshots(engine: Engine, today: date) -> dict:
    """Active trends without a snapshot for the day before ``today``."""
    yesterday = today - timedelta(days=1)
    with engine.connect() as conn:
        missing = [name for _, name in trends_without_snapshot(conn, yesterday)]
    return {"day": str(yesterday), "trends_missing": len(missing), "examples": ", ".join(missing[:10])}
