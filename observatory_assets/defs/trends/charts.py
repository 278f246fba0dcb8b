"""What people see: a trend's probability over the last 90 days with its evidence marked, as a PNG in the
object store (``trends/charts/<trend name>.png``, the latest, and a dated copy), and the day's biggest moves."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from sqlalchemy import Engine, text

from observatory_assets.defs.trends.ledger import probability, series
from observatory_assets.lib.charts import dated_png, png_data_uri
from resources.object_store import ObjectStore, put_bytes

CHART_DAYS = 90


def chart_key(trend_name: str, day: date | None = None) -> str:
    """The object key of a trend's chart: the latest, or the copy of ``day``."""
    return f"trends/charts/{trend_name}.png" if day is None else f"trends/charts/{day:%Y/%m/%d}/{trend_name}.png"


@dataclass(frozen=True)
class Chart:
    trend: str
    key: str
    png: bytes

    def data_uri(self) -> str:
        return png_data_uri(self.png)


def render_chart(title: str, days: list[date], probabilities: list[float], marks: list[tuple[date, float]]) -> bytes:
    """PNG of the probability line with evidence marked (▲ up, ▼ down, size by |Δ log-odds|)."""
    # imported here, not with the module: every Dagster process loads the code location, few draw charts
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.4, 2.6), dpi=80)
    axes = figure.subplots()
    axes.plot(days, probabilities, color="#1f5fa8", linewidth=1.6)
    by_day = dict(zip(days, probabilities))
    for sign, marker, color in ((1, "^", "#2e8b3a"), (-1, "v", "#c0392b")):
        chosen = [(d, delta) for d, delta in marks if (delta > 0) == (sign > 0) and d in by_day and delta]
        if chosen:
            axes.scatter([d for d, _ in chosen], [by_day[d] for d, _ in chosen], marker=marker, color=color,
                         s=[20 + 80 * min(abs(delta), 2) for _, delta in chosen], zorder=3)  # fmt: skip
    axes.set_ylim(0, 1)
    axes.set_ylabel("probability")
    axes.set_title(title[:80], fontsize=10)
    return dated_png(figure)


def chart_days(day: date) -> list[date]:
    """The days a chart up to ``day`` shows."""
    return [day - timedelta(days=CHART_DAYS - 1 - i) for i in range(CHART_DAYS)]


def ledger_chart(conn, trend_id: int, title: str, day: date) -> bytes:
    """The PNG of one trend's 90 days up to the end of ``day``, every day and mark computed from the ledger,
    so it is complete even where days were never snapshotted."""
    days = chart_days(day)
    marks = conn.execute(
        text(
            "SELECT (event_at AT TIME ZONE 'UTC')::date, delta_log_odds FROM trend_evidence "
            "WHERE trend_id = :t AND retracted_at IS NULL AND event_at >= :start AND event_at < :end"
        ),
        {"t": trend_id, "start": days[0], "end": day + timedelta(days=1)},
    ).all()
    values = [probability(v) for v in series(conn, trend_id, days)]
    return render_chart(title, days, values, [(d, v) for d, v in marks])


def store_charts(engine: Engine, store: ObjectStore, day: date, trend_ids: list[int] | None = None) -> list[Chart]:
    """Render and store the 90-day chart up to ``day`` of each active trend (or ``trend_ids``) from the ledger."""
    charts = []
    with engine.begin() as conn:
        trends = conn.execute(
            text(
                "SELECT id, name, title FROM trends WHERE (CAST(:ids AS bigint[]) IS NULL AND active) "
                "OR id = ANY(CAST(:ids AS bigint[])) ORDER BY name"
            ),
            {"ids": trend_ids},
        ).all()
        for trend in trends:
            png = ledger_chart(conn, trend.id, trend.title or trend.name, day)
            put_bytes(store, chart_key(trend.name, day), png, "image/png")
            put_bytes(store, chart_key(trend.name), png, "image/png")
            charts.append(Chart(trend.name, chart_key(trend.name), png))
    return charts


def biggest_moves(engine: Engine, day: date, limit: int = 10) -> list[dict]:
    """The day's snapshot moves (change from the day before), largest first, with the top evidence's reasoning."""
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                """
                SELECT t.name, s.probability, s.log_odds - coalesce(p.log_odds, t.baseline_log_odds) AS change,
                       s.evidence_count, s.movers -> 0 ->> 'reasoning' AS reasoning
                  FROM trend_snapshots s JOIN trends t ON t.id = s.trend_id
                  LEFT JOIN trend_snapshots p ON p.trend_id = s.trend_id AND p.snapshot_date = s.snapshot_date - 1
                 WHERE s.snapshot_date = :day
                 ORDER BY abs(s.log_odds - coalesce(p.log_odds, t.baseline_log_odds)) DESC, t.name
                 LIMIT :limit
                """
            ),
            {"day": day, "limit": limit},
        ).all()
    return [
        {"trend": r.name, "probability": f"{r.probability:.3f}", "change (log-odds)": f"{r.change:+.3f}",
         "evidence": r.evidence_count, "top evidence": r.reasoning or "—"}
        for r in rows
    ]  # fmt: skip
