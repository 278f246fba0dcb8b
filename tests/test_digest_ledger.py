"""A digest never contradicts itself when daily snapshots have gaps (issue 18 §2.9): a trend's move, the
evidence counted with it and its chart are all computed from the ledger for the digest's day, whichever
``trend_snapshots`` partitions exist. Seen before: a move of +0.61 "now 17% (0 evidence)" measured against
a snapshot a month old, beside a chart that ended that month."""

from __future__ import annotations

import base64
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import text

from observatory_assets.defs.publishing.digest import day_bounds, load_digest, render_fragment
from observatory_assets.defs.trends.catalog import sync_trends
from observatory_assets.defs.trends.charts import ledger_chart, store_charts
from observatory_assets.defs.trends.evidence import update_evidence
from observatory_assets.defs.trends.ledger import log_odds_at, write_snapshots
from tests.support.trend_world import TrendWorld
from tests.test_trends import story, trend_file

LAST_SNAPSHOT, EVIDENCE_DAYS, DIGEST_DAY = (
    date(2026, 11, 6),
    (date(2026, 11, 14), date(2026, 11, 15)),
    date(2026, 12, 5),
)


@pytest.fixture
def ledger_with_gaps(engine, store, tmp_path) -> int:
    """The election trend with evidence on 14 and 15 November, snapshots only for 6 November and 5 December
    (the days between were never snapshotted), and the stored latest chart from the 6 November run."""
    trend_file(tmp_path, "election", half_life=10)
    sync_trends(engine, tmp_path)
    world = TrendWorld(engine)
    story(world, "first", datetime.combine(EVIDENCE_DAYS[0], datetime.min.time(), UTC) + timedelta(hours=9),
          ["dr", "tv2"])  # fmt: skip
    story(world, "second", datetime.combine(EVIDENCE_DAYS[1], datetime.min.time(), UTC) + timedelta(hours=10),
          ["politiken"])  # fmt: skip
    story(world, "weather", datetime.combine(DIGEST_DAY, datetime.min.time(), UTC) + timedelta(hours=8), ["dr"],
          body="Regn og blæst i hele landet")  # fmt: skip
    update_evidence(engine)
    write_snapshots(engine, [LAST_SNAPSHOT])
    store_charts(engine, store, LAST_SNAPSHOT)
    write_snapshots(engine, [DIGEST_DAY])
    with engine.connect() as conn:
        return conn.execute(text("SELECT id FROM trends WHERE name = 'election'")).scalar_one()


def _ledger_move(conn, trend_id: int, day: date) -> float:
    start, end = day_bounds(day)
    state = log_odds_at(conn, [(trend_id, start), (trend_id, end)])
    return state[(trend_id, end)] - state[(trend_id, start)]


def test_the_move_its_evidence_and_its_chart_cover_the_digests_day_from_the_ledger(engine, store, ledger_with_gaps):
    with engine.connect() as conn:
        digest = load_digest(conn, DIGEST_DAY, store)
        (move,) = digest.trends
        assert (move.since, move.until) == day_bounds(DIGEST_DAY)
        # the day's decay only: the November evidence is not counted against a month-old snapshot
        assert move.change == pytest.approx(_ledger_move(conn, ledger_with_gaps, DIGEST_DAY))
        assert -0.05 < move.change < 0 and move.evidence_count == 0 and move.evidence is None
        chart = ledger_chart(conn, ledger_with_gaps, "election", DIGEST_DAY)
    assert move.chart_uri == "data:image/png;base64," + base64.b64encode(chart).decode()
    with store.open("trends/charts/election.png") as stored:
        assert chart != stored.read()  # not the stale chart of 6 November
    html = render_fragment(digest)
    assert 'from <time datetime="2026-12-05T00:00:00+00:00">05 Dec 2026 00:00</time>' in html
    assert 'to <time datetime="2026-12-06T00:00:00+00:00">06 Dec 2026 00:00</time> UTC' in html
    # no evidence that day: unchanged, never "-0.00 log-odds" or "0 evidence lines"
    assert "unchanged" in html and "no new evidence in this interval" in html
    assert "0 evidence lines" not in html and "-0.00" not in html and "+0.00" not in html


def test_a_day_without_a_snapshot_shows_its_own_move_and_evidence(engine, store, ledger_with_gaps):
    with engine.connect() as conn:
        for day in EVIDENCE_DAYS:
            (move,) = load_digest(conn, day, store).trends
            start, end = day_bounds(day)
            evidence = conn.execute(
                text(
                    "SELECT count(*) FROM trend_evidence WHERE trend_id = :t AND retracted_at IS NULL "
                    "AND event_at > :start AND event_at <= :end"
                ),
                {"t": ledger_with_gaps, "start": start, "end": end},
            ).scalar_one()
            assert move.change == pytest.approx(_ledger_move(conn, ledger_with_gaps, day)) and move.change > 0.1
            assert move.evidence_count == evidence >= 1 and move.evidence


def test_one_event_is_one_event(engine, store, ledger_with_gaps):
    with engine.connect() as conn:
        html = render_fragment(load_digest(conn, DIGEST_DAY, store))
    assert "· 1 event</p>" in html and "1 events" not in html
