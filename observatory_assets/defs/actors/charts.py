"""What people see of the volumes: a design's daily items per platform over the last 30 days, as a PNG in
the object store (``analysis/volume/<design>.png``)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, timedelta

from sqlalchemy import Connection

from observatory_assets.defs.actors.analysis import volume_rows
from observatory_assets.lib.charts import dated_png
from resources.object_store import ObjectStore, put_bytes

CHART_DAYS = 30


@dataclass(frozen=True)
class VolumeChart:
    design: str
    key: str
    png: bytes


def render_volume_chart(title: str, days: list[date], series: dict[str, list[int]]) -> bytes:
    """PNG of daily items, one stacked band per platform."""
    from matplotlib.figure import Figure  # imported here: every Dagster process loads the code location

    figure = Figure(figsize=(6.4, 2.6), dpi=80)
    axes = figure.subplots()
    if series:
        axes.stackplot(days, *series.values(), labels=list(series), alpha=0.85)
        axes.legend(loc="upper left", fontsize=7, ncols=min(len(series), 4))
    axes.set_ylabel("items per day")
    axes.set_title(title[:80], fontsize=10)
    return dated_png(figure)


def store_volume_charts(conn: Connection, store: ObjectStore, day: date) -> list[VolumeChart]:
    """Render and store each design's 30-day platform chart up to ``day``."""
    days = [day - timedelta(days=CHART_DAYS - 1 - n) for n in range(CHART_DAYS)]
    by_design: dict[str, dict[str, dict[date, int]]] = defaultdict(lambda: defaultdict(dict))
    for row in volume_rows(conn, None, "platform", days[0], day):
        by_design[row.design or "(no design)"][row.value][row.day] = row.items
    charts = []
    for design, platforms in sorted(by_design.items()):
        series = {platform: [counts.get(d, 0) for d in days] for platform, counts in sorted(platforms.items())}
        png = render_volume_chart(f"{design}: items per day by platform", days, series)
        key = f"analysis/volume/{design}.png"
        put_bytes(store, key, png, "image/png")
        charts.append(VolumeChart(design, key, png))
    return charts
