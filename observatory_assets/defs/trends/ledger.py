"""A trend's state is a pure function of its evidence ledger.

``L(t) = L0 + Σ Δi · 0.5^((t − ti) / H)`` over the non-retracted evidence with event time
``ti ≤ t``; ``L0`` is the logit of the baseline, ``H`` the half-life. After the horizon
the trend stops moving (``t`` is held at the horizon). The result is clamped to
``[logit(0.001), logit(0.999)]`` and rounded to 12 decimals, so the same ledger gives
bit-identical numbers whichever run, batch or plan computed them. Every value the
platform stores (``trends.current_log_odds``, ``trend_snapshots``) and every chart is
computed by the one statement here, for a set of (trend, time) points at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import Connection, Engine, text

from observatory_assets.lib.outbox import TREND_CROSSED, emit

#: The stored and displayed log-odds never leave [logit(0.001), logit(0.999)].
LOG_ODDS_MIN = math.log(0.001 / 0.999)
LOG_ODDS_MAX = -LOG_ODDS_MIN

#: How many of the day's largest evidence rows a snapshot keeps as its movers.
MOVERS_PER_DAY = 3


def logit(p: float) -> float:
    return math.log(p / (1 - p))


def probability(log_odds: float) -> float:
    return 1 / (1 + math.exp(-log_odds))


def day_end(day: date) -> datetime:
    """A daily snapshot holds the state at the end of its UTC day."""
    return datetime.combine(day + timedelta(days=1), datetime.min.time(), tzinfo=UTC)


#: Log-odds at the points of the temporary table ``trend_points (trend_id, at)``.
_LOG_ODDS_AT_POINTS = f"""
SELECT p.trend_id, p.at,
       round(least(greatest(
           t.baseline_log_odds + coalesce(sum(e.delta_log_odds
               * power(0.5::float8, (date_part('epoch', p.effective) - date_part('epoch', e.event_at))
                                    / (t.half_life_hours * 3600))), 0),
           {LOG_ODDS_MIN!r}), {LOG_ODDS_MAX!r})::numeric, 12)::float8 AS log_odds
  FROM (SELECT q.trend_id, q.at,
               least(q.at, coalesce((t.horizon::timestamp AT TIME ZONE 'UTC'), q.at)) AS effective
          FROM trend_points q JOIN trends t ON t.id = q.trend_id) p
  JOIN trends t ON t.id = p.trend_id
  LEFT JOIN trend_evidence e
         ON e.trend_id = p.trend_id AND e.retracted_at IS NULL AND e.event_at <= p.effective
 GROUP BY p.trend_id, p.at, t.baseline_log_odds
"""


def _stage_points(conn, points: list[tuple[int, datetime]] | None = None, select_sql: str | None = None, **params):
    conn.execute(text("DROP TABLE IF EXISTS trend_points"))
    conn.execute(text("CREATE TEMP TABLE trend_points (trend_id bigint NOT NULL, at timestamptz NOT NULL)"))
    if select_sql is not None:
        conn.execute(text(f"INSERT INTO trend_points (trend_id, at) {select_sql}"), params)
    elif points:
        conn.execute(
            text("INSERT INTO trend_points SELECT * FROM unnest(CAST(:ids AS bigint[]), CAST(:ats AS timestamptz[]))"),
            {"ids": [p[0] for p in points], "ats": [p[1] for p in points]},
        )
    conn.execute(text("ANALYZE trend_points"))


def log_odds_at(conn, points: list[tuple[int, datetime]]) -> dict[tuple[int, datetime], float]:
    """The ledger's log-odds of each (trend id, time)."""
    _stage_points(conn, points)
    return {(r.trend_id, r.at): r.log_odds for r in conn.execute(text(_LOG_ODDS_AT_POINTS))}


def refresh_current_state(conn, at: datetime | None = None) -> int:
    """Recompute ``trends.current_log_odds`` of every trend from its ledger at ``at`` (default: now)."""
    _stage_points(conn, select_sql="SELECT id, CAST(:at AS timestamptz) FROM trends", at=at or datetime.now(UTC))
    before = dict(conn.execute(text("SELECT id, current_log_odds FROM trends")).all())
    updated = conn.execute(
        text(
            f"""
            UPDATE trends t SET current_log_odds = s.log_odds, state_at = s.at
              FROM ({_LOG_ODDS_AT_POINTS}) s
             WHERE t.id = s.trend_id
            RETURNING t.id, t.name, t.current_log_odds
            """
        )
    ).all()
    for trend_id, name, log_odds in updated:
        if before.get(trend_id) is not None and before[trend_id] != log_odds:
            old, new = probability(before[trend_id]), probability(log_odds)
            data = {"trend": name, "probability": round(new, 4), "previous_probability": round(old, 4)}
            emit(conn, TREND_CROSSED, data, crossing=(old, new))
    return len(updated)


def check_state_matches_ledger(engine: Engine) -> dict:
    """Trends whose stored log-odds differs from the ledger recomputed at the time it was stored, or lies
    outside the clamp."""
    with engine.begin() as conn:
        _stage_points(conn, select_sql="SELECT id, coalesce(state_at, now()) FROM trends")
        mismatched = conn.execute(
            text(
                f"""
                SELECT t.name, t.current_log_odds, s.log_odds
                  FROM trends t JOIN ({_LOG_ODDS_AT_POINTS}) s ON s.trend_id = t.id
                 WHERE abs(t.current_log_odds - s.log_odds) > 1e-9
                    OR t.current_log_odds NOT BETWEEN {LOG_ODDS_MIN!r} - 1e-12 AND {LOG_ODDS_MAX!r} + 1e-12
                 ORDER BY t.name
                """
            )
        ).all()
        checked = conn.execute(text("SELECT count(*) FROM trends")).scalar_one()
    return {
        "trends_checked": checked,
        "trends_off_ledger": len(mismatched),
        "examples": [f"{r.name}: stored {r.current_log_odds:.6f}, ledger {r.log_odds:.6f}" for r in mismatched[:5]],
    }


@dataclass(frozen=True)
class SnapshotResult:
    """Snapshot rows written: new ones, restated ones (value changed), and unchanged re-runs."""

    written: int
    restated: int
    unchanged: int


_WRITE_SNAPSHOTS = f"""
WITH state AS ({_LOG_ODDS_AT_POINTS}),
day_evidence AS (
    SELECT p.trend_id, p.at, count(e.id) AS n,
           coalesce(jsonb_agg(jsonb_build_object('event_id', e.event_id, 'indicator', e.signal,
                                                 'delta_log_odds', e.delta_log_odds, 'reasoning', e.reasoning)
                              ORDER BY abs(e.delta_log_odds) DESC, e.id)
                    FILTER (WHERE e.rank <= {MOVERS_PER_DAY}), '[]') AS movers
      FROM trend_points p
      LEFT JOIN LATERAL (
          SELECT x.*, row_number() OVER (ORDER BY abs(x.delta_log_odds) DESC, x.id) AS rank
            FROM trend_evidence x
           WHERE x.trend_id = p.trend_id AND x.retracted_at IS NULL
             AND x.event_at >= p.at - interval '1 day' AND x.event_at < p.at) e ON true
     GROUP BY p.trend_id, p.at
)
INSERT INTO trend_snapshots AS s (trend_id, snapshot_date, log_odds, probability, evidence_count, movers,
                                  first_log_odds, first_probability)
SELECT state.trend_id, ((state.at AT TIME ZONE 'UTC') - interval '1 day')::date, state.log_odds,
       1 / (1 + exp(-state.log_odds)), d.n, d.movers, state.log_odds, 1 / (1 + exp(-state.log_odds))
  FROM state JOIN day_evidence d ON d.trend_id = state.trend_id AND d.at = state.at
ON CONFLICT (trend_id, snapshot_date) DO UPDATE
   SET log_odds = EXCLUDED.log_odds, probability = EXCLUDED.probability, evidence_count = EXCLUDED.evidence_count,
       movers = EXCLUDED.movers, restated_at = now()
 WHERE (s.log_odds, s.evidence_count, s.movers) IS DISTINCT FROM (EXCLUDED.log_odds, EXCLUDED.evidence_count,
                                                                  EXCLUDED.movers)
RETURNING {{returning}}
"""


def _ensure_months(conn, days: list[date]) -> None:
    for month in sorted({d.replace(day=1) for d in days}):
        conn.execute(text("SELECT ensure_month_partition(CAST('trend_snapshots' AS regclass), :m)"), {"m": month})


def _write_staged(conn, days: list[date]) -> SnapshotResult:
    _ensure_months(conn, days)
    total = conn.execute(text("SELECT count(*) FROM trend_points")).scalar_one()
    outcomes = conn.execute(text(_WRITE_SNAPSHOTS.format(returning="old.trend_id IS NOT NULL"))).scalars().all()
    restated = sum(outcomes)
    return SnapshotResult(written=len(outcomes) - restated, restated=restated, unchanged=total - len(outcomes))


def write_snapshots(engine: Engine, days: list[date], trend_ids: list[int] | None = None) -> SnapshotResult:
    """Snapshot the active trends (or ``trend_ids``) for each UTC day: one set-based statement. A day
    already written is restated only if the ledger now gives another value; its first value is kept."""
    with engine.begin() as conn:
        _stage_points(
            conn,
            select_sql="""SELECT t.id, d.day + interval '1 day'
                            FROM trends t, unnest(CAST(:days AS date[])) AS d (day)
                           WHERE (CAST(:ids AS bigint[]) IS NULL AND t.active) OR t.id = ANY(CAST(:ids AS bigint[]))""",
            days=days,
            ids=trend_ids,
        )
        return _write_staged(conn, days)


def restate_snapshots(conn, affected: dict[int, datetime]) -> dict[date, int]:
    """Rewrite the snapshots already written on or after each affected trend's earliest changed day (a
    retraction, a late or changed piece of evidence). Returns the restated rows per day."""
    if not affected:
        return {}
    _stage_points(
        conn,
        select_sql="""SELECT s.trend_id, s.snapshot_date + interval '1 day'
                        FROM trend_snapshots s
                        JOIN unnest(CAST(:ids AS bigint[]), CAST(:froms AS timestamptz[])) AS a (trend_id, from_at)
                          ON a.trend_id = s.trend_id AND s.snapshot_date >= (a.from_at AT TIME ZONE 'UTC')::date""",
        ids=list(affected),
        froms=list(affected.values()),
    )
    days = conn.execute(text("SELECT DISTINCT (at AT TIME ZONE 'UTC')::date - 1 FROM trend_points")).scalars().all()
    if not days:
        return {}
    _ensure_months(conn, days)
    rows = conn.execute(
        text(
            f"""
            WITH written AS ({_WRITE_SNAPSHOTS.format(returning="s.snapshot_date")})
            SELECT snapshot_date, count(*) FROM written GROUP BY 1 ORDER BY 1
            """
        )
    ).all()
    return {r[0]: r[1] for r in rows}


def series(conn, trend_id: int, days: list[date]) -> list[float]:
    """The trend's end-of-day log-odds on each day, from the ledger (whether snapshotted or not)."""
    values = log_odds_at(conn, [(trend_id, day_end(d)) for d in days])
    return [values[(trend_id, day_end(d))] for d in days]


def explain_trend(engine: Engine, name: str, at: datetime | None = None) -> dict:
    """Why a trend stands where it does at ``at`` (default now): its state from the ledger and every piece of
    evidence up to then, retracted ones flagged, largest first, with the items each was built on."""
    at = at or datetime.now(UTC)
    with engine.begin() as conn:
        trend = conn.execute(
            text("SELECT id, name, title, baseline_probability FROM trends WHERE name = :n"), {"n": name}
        ).one_or_none()
        if trend is None:
            raise ValueError(f"no trend named {name!r} (observatory trends list shows them)")
        value = log_odds_at(conn, [(trend.id, at)])[(trend.id, at)]
        rows = conn.execute(
            text(
                """
                SELECT e.event_id, e.signal, e.event_at, e.delta_log_odds, e.credibility, e.corroboration, e.novelty,
                       e.severity, e.reasoning, e.retracted_at IS NOT NULL AS retracted,
                       coalesce((SELECT jsonb_agg(jsonb_build_object('source', s.name, 'external_id', r.external_id,
                                                                     'url', r.url, 'title', r.title) ORDER BY r.id)
                                   FROM raw_items r JOIN sources s ON s.id = r.source_id
                                  WHERE r.id = ANY(e.item_ids)), '[]') AS items
                  FROM trend_evidence e
                 WHERE e.trend_id = :t AND e.event_at <= :at
                 ORDER BY e.retracted_at IS NOT NULL, abs(e.delta_log_odds) DESC, e.event_at, e.id
                """
            ),
            {"t": trend.id, "at": at},
        ).all()
    return {
        "trend": trend.name,
        "title": trend.title,
        "probability": probability(value),
        "log_odds": value,
        "baseline_probability": trend.baseline_probability,
        "as_of": at.isoformat(),
        "evidence": [
            {
                "event_id": r.event_id,
                "indicator": r.signal,
                "at": r.event_at.isoformat(),
                "delta_log_odds": r.delta_log_odds,
                "credibility": r.credibility,
                "corroboration": r.corroboration,
                "novelty": r.novelty,
                "severity": r.severity,
                "reasoning": r.reasoning,
                "retracted": r.retracted,
                "items": r.items,
            }
            for r in rows
        ],
    }


def trends_without_snapshot(conn, day: date) -> list[tuple[int, str]]:
    """(id, name) of every active trend that has no snapshot for ``day``, by name."""
    rows = conn.execute(
        text(
            "SELECT id, name FROM trends t WHERE active AND NOT EXISTS "
            "(SELECT 1 FROM trend_snapshots s WHERE s.trend_id = t.id AND s.snapshot_date = :d) ORDER BY name"
        ),
        {"d": day},
    ).all()
    return [(row.id, row.name) for row in rows]


def evidence_totals(conn) -> tuple[int, int, int]:
    """(live evidence rows, retracted evidence rows, active trends) over the whole ledger."""
    live, retracted, active = conn.execute(
        text(
            "SELECT count(*) FILTER (WHERE retracted_at IS NULL), count(*) FILTER (WHERE retracted_at IS NOT NULL),"
            " (SELECT count(*) FROM trends WHERE active) FROM trend_evidence"
        )
    ).one()
    return live, retracted, active


_STATES = """
SELECT t.name, t.title, t.active, t.current_log_odds, t.baseline_probability AS baseline,
       (SELECT count(*) FROM trend_evidence e WHERE e.trend_id = t.id AND e.retracted_at IS NULL) AS evidence,
       (SELECT e.reasoning FROM trend_evidence e WHERE e.trend_id = t.id AND e.retracted_at IS NULL
         ORDER BY abs(e.delta_log_odds) DESC, e.id LIMIT 1) AS top
  FROM trends t
 WHERE t.active OR NOT :active_only
 ORDER BY t.active DESC, t.name
"""


def trend_states(conn: Connection, *, active_only: bool = False) -> list[dict]:
    """Each trend (the active ones first, then by name) with its probability now, its baseline, how much live
    evidence it has and the reasoning of the largest piece (``top``; "no evidence yet" without any)."""
    rows = conn.execute(text(_STATES), {"active_only": active_only}).mappings()
    return [
        {**r, "probability": probability(r["current_log_odds"]), "top": r["top"] or "no evidence yet"} for r in rows
    ]


def trend_history(conn: Connection, name: str, days: int = 14) -> tuple:
    """A trend's definition (question, horizon, half-life, source file, active) and its latest ``days``
    snapshots, newest first (date, probability, first written probability, evidence count)."""
    trend = conn.execute(
        text("SELECT question, horizon, half_life_hours, source_file, active FROM trends WHERE name = :n"), {"n": name}
    ).one_or_none()
    if trend is None:
        raise ValueError(f"no trend named {name!r} (observatory trends list shows them)")
    snapshots = conn.execute(
        text("SELECT s.snapshot_date, s.probability, s.first_probability, s.evidence_count FROM trend_snapshots s "
             "JOIN trends t ON t.id = s.trend_id WHERE t.name = :n ORDER BY 1 DESC LIMIT :days"),
        {"n": name, "days": days},
    ).all()  # fmt: skip
    return trend, snapshots
