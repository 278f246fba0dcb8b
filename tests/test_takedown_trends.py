"""A takedown through the publishing workflow restates the trends built on the item: stage 1 retracts
the evidence (the trend falls back and past days are restated); a cancel brings the evidence back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import text

from observatory_assets.defs.publishing.site import StaticTarget
from observatory_assets.defs.publishing.takedowns import cancel_takedown, process_takedowns, request_takedown
from observatory_assets.defs.trends.catalog import sync_trends
from observatory_assets.defs.trends.evidence import update_evidence
from observatory_assets.defs.trends.ledger import write_snapshots
from tests.support.helpers import write
from tests.support.trend_world import TrendWorld, story_vector

T0 = datetime(2026, 10, 1, 12, tzinfo=UTC)

TREND = """\
name: election
title: Snap election
question: Will a snap election be called?
baseline_probability: 0.10
half_life_days: 30
indicators:
  - name: called
    direction: up
    likelihood_ratio: 3.0
    severity: 1.0
    terms:
      da: ["folketingsvalg"]
"""


def trend_state(engine) -> tuple[float, int, list[tuple]]:
    """(current log-odds, live evidence rows, snapshots as (day, log_odds, first_log_odds, restated))."""
    with engine.connect() as conn:
        log_odds = conn.execute(text("SELECT current_log_odds FROM trends WHERE name = 'election'")).scalar_one()
        live = conn.execute(text("SELECT count(*) FROM trend_evidence WHERE retracted_at IS NULL")).scalar_one()
        snapshots = conn.execute(
            text(
                "SELECT snapshot_date, log_odds, first_log_odds, restated_at IS NOT NULL FROM trend_snapshots "
                "ORDER BY 1"
            )
        ).all()
    return log_odds, live, [tuple(s) for s in snapshots]


def test_stage1_retracts_the_trend_evidence_and_a_cancel_restores_it(engine, store, tmp_path) -> None:
    world = TrendWorld(engine)
    write(tmp_path / "election.yaml", TREND)
    sync_trends(engine, tmp_path)
    item = world.item("dr", "Statsministeren udskriver valg", "Folketingsvalget er udskrevet.", "da", T0,
                      story_vector("valg"))  # fmt: skip
    world.event([item])
    update_evidence(engine)
    write_snapshots(engine, [T0.date() + timedelta(days=n) for n in range(3)])
    moved, live, before = trend_state(engine)
    assert live == 1 and all(s[1] > s[2] - 1e-9 and not s[3] for s in before)

    request = request_takedown(engine, "item", str(item), "privacy", "dpo")
    targets = {"static": StaticTarget(store)}
    stage1 = process_takedowns(engine, store, targets, actor="test")
    assert stage1.withdrawn == [request] and not stage1.failures
    assert stage1.steps[request]["restate_trend_evidence"]["retracted"] == 1
    retracted, live, after = trend_state(engine)
    assert live == 0 and retracted < moved
    assert all(day[3] and day[1] < day[2] for day in after)  # "known now" restated, "believed then" kept

    cancel_takedown(engine, request, "dpo")  # nothing was published: no restore pass is due, the trend is back at once
    assert process_takedowns(engine, store, targets, actor="test").restored == []
    back, live, restored = trend_state(engine)
    assert live == 1 and abs(back - moved) < 1e-6  # the current state is taken at a later now: decay moved it a hair
    assert all(abs(day[1] - day[2]) < 1e-9 for day in restored)
