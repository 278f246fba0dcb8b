"""Trend evidence misses no event, however long a clustering run queued before it committed (issue 18 §2.2).

Two clustering runs overlap: the second starts while the first holds the clustering lock, and commits
only after the first's change has been matched by an evidence run. Its new event must still be
matched by the next evidence run."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

from sqlalchemy import text

from observatory_assets.defs.events.clustering import ClusteringParams, cluster_events
from observatory_assets.defs.trends import evidence
from observatory_assets.defs.trends.catalog import sync_trends
from observatory_assets.defs.trends.evidence import update_evidence
from tests.support.trend_world import DIMENSIONS, TrendWorld, story_vector
from tests.test_trends import trend_file

T0 = datetime(2026, 10, 1, 12, tzinfo=UTC)
#: The delayed run waits this much longer than the look-back the evidence once allowed for open transactions.
DELAY_PAST_OVERLAP = timedelta(seconds=1.5)


def _wait_until_blocked(engine, wait_event_type: str, what: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            waiting = conn.execute(
                text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND wait_event = :w"),
                {"w": wait_event_type},
            ).scalar_one()
        if waiting:
            return
        time.sleep(0.05)
    raise AssertionError(f"the clustering run never waited for {what}")


def test_a_clustering_run_queued_behind_another_past_any_overlap_still_has_its_events_matched(
    engine, tmp_path, monkeypatch
):
    # The code before the change sequence looked back a fixed 10 minutes behind its clock watermark: the
    # same window, shrunk to a second, lets this test queue a run past it in seconds (no-op afterwards).
    monkeypatch.setattr(evidence, "WATERMARK_OVERLAP", timedelta(seconds=1), raising=False)
    trend_file(tmp_path, "election")
    sync_trends(engine, tmp_path)
    world = TrendWorld(engine)
    body = "Statsministeren udskriver folketingsvalget i dag."
    first = world.event([world.item("dr", "first report", body, "da", T0, story_vector("first"))])
    assert update_evidence(engine).added == 1

    # Run 1 holds the clustering lock (it is busy growing the first event); run 2 starts and queues behind it.
    run_one = engine.connect()
    run_one.execute(text("SELECT pg_advisory_xact_lock(hashtext('observatory.events'))"))
    second_item = world.item("tv2", "second report", body, "da", T0 + timedelta(days=3), story_vector("second"))
    outcome: dict = {}
    run_two = threading.Thread(
        target=lambda: outcome.update(result=cluster_events(engine, "hashing", DIMENSIONS, ClusteringParams(0.8)))
    )
    run_two.start()
    keeper = engine.connect()
    try:
        _wait_until_blocked(engine, "advisory", "the clustering lock")
        time.sleep(DELAY_PAST_OVERLAP.total_seconds())
        # Something keeps run 2 open after it started writing (here: a lock on event_items), while run 1
        # commits the change it made to the first event and an evidence run matches it.
        keeper.execute(text("LOCK TABLE event_items IN SHARE MODE"))
        run_one.execute(
            text("UPDATE events SET item_count = item_count, updated_at = clock_timestamp() WHERE id = :id"),
            {"id": first},
        )
        run_one.commit()
        _wait_until_blocked(engine, "relation", "event_items")
        update_evidence(engine)
        keeper.commit()
        run_two.join(60)
    finally:
        run_one.close()
        keeper.close()
    assert outcome["result"].new_events == 1

    update_evidence(engine)
    with engine.connect() as conn:
        matched = conn.execute(
            text(
                "SELECT ei.item_id FROM trend_evidence e JOIN event_items ei ON ei.event_id = e.event_id "
                "WHERE e.retracted_at IS NULL ORDER BY ei.item_id"
            )
        ).scalars()
        assert second_item in list(matched), "run 2's event was never matched"


def test_evidence_runs_without_new_events_match_nothing_again(engine, tmp_path):
    """The recorded transaction id moves on: an evidence run re-reads only what changed since the last."""
    trend_file(tmp_path, "election")
    sync_trends(engine, tmp_path)
    world = TrendWorld(engine)
    world.event([world.item("dr", "report", "Folketingsvalget i dag", "da", T0, story_vector("a"))])
    assert update_evidence(engine).events_examined == 1
    for _ in range(2):
        assert update_evidence(engine).events_examined == 0
