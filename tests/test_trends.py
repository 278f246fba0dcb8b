"""Trends on real Postgres: matching with stemming, the factors, decay, clamp, cap, batching, snapshots,
restatement after retraction and takedowns, trend files."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from observatory_assets.defs.collection.catalog import load_catalog, sync_catalog
from observatory_assets.defs.trends.catalog import set_source_credibility, sync_trends
from observatory_assets.defs.trends.evidence import retract_withdrawn, update_evidence
from observatory_assets.defs.trends.ledger import (
    LOG_ODDS_MAX,
    LOG_ODDS_MIN,
    check_state_matches_ledger,
    day_end,
    log_odds_at,
    write_snapshots,
)
from tests.conftest import write
from tests.support.trend_world import TrendWorld, story_vector

T0 = datetime(2026, 10, 1, 12, tzinfo=UTC)

TREND = """\
name: {name}
title: {title}
question: Will it happen?
baseline_probability: 0.10
half_life_days: {half_life}
indicators:
  - name: signal
    direction: {direction}
    likelihood_ratio: 3.0
    severity: 1.0
    terms:
      da: [{da}]
      en: [{en}]
disqualifiers:
  en: ["opinion poll"]
"""


def trend_file(folder: Path, name: str, da: str = '"folketingsvalg"', en: str = '"snap election"', **fields) -> Path:
    values = {"title": name, "half_life": 30, "direction": "up", **fields}
    return write(folder / f"{name}.yaml", TREND.format(name=name, da=da, en=en, **values))


@pytest.fixture
def world(engine) -> TrendWorld:
    return TrendWorld(engine)


def ledger(engine, name: str = "election") -> list[dict]:
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT v.title, e.signal, e.event_at, e.credibility, e.corroboration, e.novelty, e.delta_log_odds, "
                "e.retracted_at IS NOT NULL AS retracted FROM trend_evidence e JOIN trends t ON t.id = e.trend_id "
                "LEFT JOIN events v ON v.id = e.event_id WHERE t.name = :n ORDER BY e.event_at, v.title"
            ),
            {"n": name},
        ).mappings()
        return [dict(r) for r in rows]


def trend_id(engine, name: str = "election") -> int:
    with engine.connect() as conn:
        return conn.execute(text("SELECT id FROM trends WHERE name = :n"), {"n": name}).scalar_one()


def story(world: TrendWorld, key: str, at: datetime, sources: list[str], language: str = "da", body: str = "",
          copies: bool = False) -> tuple[int, list[int]]:  # fmt: skip
    """An event of one item per source: independent reports (own title and vector) or near copies of one text."""
    body = body or ("Statsministeren udskriver folketingsvalget i dag." if language == "da" else
                    "The prime minister called a snap election today.")  # fmt: skip
    items = []
    for n, source in enumerate(sources):
        title = f"{key} report" if copies else f"{key} report by {source}"
        vector = story_vector(key, noise=0.05 if copies else 0.6, noise_key=f"{key}{n}")
        items.append(world.item(source, title, f"{body} {'' if copies else source}", language, at + timedelta(minutes=n),
                                vector))  # fmt: skip
    return world.event(items), items


def test_danish_inflected_forms_match_stemmed_terms(engine, world, tmp_path):
    trend_file(tmp_path, "election")
    sync_trends(engine, tmp_path)
    story(world, "valg", T0, ["dr"], body="Folketingsvalget bliver udskrevet i morgen")
    story(world, "vejr", T0, ["tv2"], body="Regn og blæst i hele landet")
    story(world, "poll", T0, ["bbc"], language="en", body="A snap election opinion poll shows a tie")
    result = update_evidence(engine)
    rows = ledger(engine)
    assert [r["title"] for r in rows] == ["valg report by dr"], "inflected Danish matched; English poll disqualified"
    assert result.added == 1 and rows[0]["delta_log_odds"] > 0


def test_copies_count_once_and_independent_reports_count_more(engine, world, tmp_path):
    trend_file(tmp_path, "copied", da='"vindmøller"')
    trend_file(tmp_path, "independent", da='"togstrejke"')
    sync_trends(engine, tmp_path)
    story(world, "wire", T0, [f"outlet{i}" for i in range(10)], body="Ny aftale om vindmøller", copies=True)
    event, items = story(world, "strike", T0, ["dr", "tv2", "politiken"], body="Stor togstrejke i morgen")
    world.duplicate(items[0], "syndicator")  # a linked duplicate of dr's text adds no source
    update_evidence(engine)
    copied, independent = ledger(engine, "copied")[0], ledger(engine, "independent")[0]
    assert copied["corroboration"] == pytest.approx(1 - 0.5**0.5)  # one source
    assert independent["corroboration"] == pytest.approx(1 - 0.5**1.5)  # three sources
    assert 0 < copied["delta_log_odds"] < independent["delta_log_odds"]


def test_retold_story_moves_less_the_second_time(engine, world, tmp_path):
    trend_file(tmp_path, "election")
    sync_trends(engine, tmp_path)
    story(world, "first", T0, ["dr", "tv2"])
    retold = [world.item("politiken", "first retold", "Folketingsvalget igen", "da", T0 + timedelta(days=10),
                         story_vector("first", noise=0.1, noise_key="retold"))]  # fmt: skip
    world.event(retold)
    update_evidence(engine)
    first, second = ledger(engine)
    assert second["novelty"] < 0.1 < first["novelty"] == 1.0
    assert second["delta_log_odds"] < first["delta_log_odds"] / 5


def test_decay_halves_the_distance_to_the_baseline_in_one_half_life(engine, world, tmp_path):
    trend_file(tmp_path, "election", half_life=10)
    sync_trends(engine, tmp_path)
    story(world, "valg", T0, ["dr", "tv2", "politiken"])
    update_evidence(engine)
    at = ledger(engine)[0]["event_at"]
    with engine.begin() as conn:
        values = log_odds_at(conn, [(trend_id(engine), at), (trend_id(engine), at + timedelta(days=10))])
    baseline = math.log(0.1 / 0.9)
    start, later = values[(trend_id(engine), at)], values[(trend_id(engine), at + timedelta(days=10))]
    assert start > baseline
    assert later - baseline == pytest.approx((start - baseline) / 2, abs=1e-9)


@pytest.mark.parametrize("direction, bound", [("up", LOG_ODDS_MAX), ("down", LOG_ODDS_MIN)])
def test_the_clamp_holds_at_both_ends(engine, world, tmp_path, direction, bound):
    trend_file(tmp_path, "election", direction=direction, half_life=1000)
    sync_trends(engine, tmp_path)
    for day in range(25):
        story(world, f"day{day}", T0 + timedelta(days=day), ["dr", "tv2", "politiken", "bt"])
    update_evidence(engine, now=T0 + timedelta(days=30))
    raw = math.log(0.1 / 0.9) + sum(r["delta_log_odds"] for r in ledger(engine))
    assert abs(raw) > abs(bound), "the evidence alone would pass the bound"
    with engine.connect() as conn:
        stored = conn.execute(text("SELECT current_log_odds FROM trends")).scalar_one()
    assert stored == pytest.approx(bound)
    assert check_state_matches_ledger(engine)["trends_off_ledger"] == 0


def test_the_per_day_cap_holds(engine, world, tmp_path):
    trend_file(tmp_path, "election")
    sync_trends(engine, tmp_path)
    for n in range(12):
        story(world, f"distinct{n}", T0 + timedelta(minutes=10 * n), [f"a{n}", f"b{n}", f"c{n}"])
    update_evidence(engine)
    rows = ledger(engine)
    assert len(rows) == 12
    assert sum(r["delta_log_odds"] for r in rows) == pytest.approx(math.log(3.0), rel=1e-6)


def test_same_events_in_any_batching_or_order_give_the_same_ledger(engine, world, tmp_path):
    trend_file(tmp_path, "election")
    sync_trends(engine, tmp_path)
    keys = [f"s{n}" for n in range(8)]
    for key in reversed(keys[4:]):  # later events first, in their own run
        story(world, key, T0 + timedelta(days=int(key[1:])), ["dr", key], body="Folketingsvalg nu")
    update_evidence(engine)
    for key in keys[:4]:
        story(world, key, T0 + timedelta(days=int(key[1:])), ["dr", key], body="Folketingsvalg nu")
        update_evidence(engine)
    batched = ledger(engine)
    with engine.begin() as conn:
        batched_state = conn.execute(text("SELECT current_log_odds FROM trends")).scalar_one()
        conn.execute(text("DELETE FROM trend_evidence"))
        conn.execute(text("UPDATE trends SET matched_through = NULL"))
    update_evidence(engine)
    assert len(batched) == 8
    assert ledger(engine) == batched
    with engine.connect() as conn:
        assert conn.execute(text("SELECT current_log_odds FROM trends")).scalar_one() == pytest.approx(
            batched_state, abs=1e-6
        )


def test_grown_event_updates_its_row_and_vanished_event_retracts(engine, world, tmp_path):
    trend_file(tmp_path, "election")
    sync_trends(engine, tmp_path)
    event, items = story(world, "valg", T0, ["dr"])
    update_evidence(engine)
    before = ledger(engine)[0]
    extra = world.item("tv2", "valg by tv2", "Folketingsvalg udskrevet", "da", T0 + timedelta(hours=1),
                       story_vector("valg", noise=0.6, noise_key="tv2"))  # fmt: skip
    world.event(items + [extra], event_id=event)
    result = update_evidence(engine)
    grown = ledger(engine)
    assert result.updated == 1 and len(grown) == 1
    assert grown[0]["corroboration"] > before["corroboration"]
    world.delete_event(event)
    update_evidence(engine)
    with engine.connect() as conn:
        reason = conn.execute(text("SELECT retraction_reason FROM trend_evidence")).scalar_one()
    assert reason == "event no longer exists"


def test_rerunning_a_day_changes_nothing_and_a_backfilled_day_equals_the_live_one(engine, world, tmp_path):
    trend_file(tmp_path, "election")
    sync_trends(engine, tmp_path)
    day = T0.date()
    story(world, "valg", T0, ["dr", "tv2"])
    update_evidence(engine)
    write_snapshots(engine, [day])
    with engine.connect() as conn:
        live = conn.execute(text("SELECT * FROM trend_snapshots")).mappings().one()
    assert write_snapshots(engine, [day]).unchanged == 1
    story(world, "later", T0 + timedelta(days=3), ["dr", "tv2"])
    update_evidence(engine)
    with engine.connect() as conn:
        assert dict(conn.execute(text("SELECT * FROM trend_snapshots")).mappings().one()) == dict(live)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM trend_snapshots"))
    result = write_snapshots(engine, [day - timedelta(days=1), day, day + timedelta(days=3)])
    assert result.written == 3
    with engine.connect() as conn:
        backfilled = conn.execute(text("SELECT * FROM trend_snapshots WHERE snapshot_date = :d"), {"d": day})
        backfilled = backfilled.mappings().one()
        before = conn.execute(text("SELECT log_odds FROM trend_snapshots WHERE snapshot_date = :d"),
                              {"d": day - timedelta(days=1)}).scalar_one()  # fmt: skip
    assert (backfilled["log_odds"], backfilled["probability"], backfilled["evidence_count"], backfilled["movers"]) == (
        live["log_odds"], live["probability"], live["evidence_count"], live["movers"])  # fmt: skip
    assert before == pytest.approx(math.log(0.1 / 0.9))
    assert live["evidence_count"] == 1 and "folketingsvalg" in live["movers"][0]["reasoning"]


def test_a_takedown_retracts_the_evidence_and_restates_the_affected_days(engine, world, tmp_path):
    trend_file(tmp_path, "election")
    sync_trends(engine, tmp_path)
    _, items = story(world, "valg", T0, ["dr"])
    story(world, "other", T0 + timedelta(days=5), ["tv2", "bt"], body="Nyt folketingsvalg på vej")
    update_evidence(engine)
    days = [T0.date() + timedelta(days=n) for n in range(7)]
    write_snapshots(engine, days)
    world.take_down(items)
    result = retract_withdrawn(engine)
    assert result.affected_days == [(trend_id(engine), T0.date().isoformat())]
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT snapshot_date, log_odds, first_log_odds, restated_at FROM trend_snapshots ORDER BY 1")
        ).all()
        evidence = conn.execute(text("SELECT retracted_at IS NOT NULL, retraction_reason FROM trend_evidence "
                                     "ORDER BY event_at")).all()  # fmt: skip
    assert evidence[0] == (True, "items withdrawn by a takedown") and evidence[1][0] is False
    assert all(r.restated_at is not None and r.log_odds < r.first_log_odds for r in rows)
    assert rows[0].log_odds == pytest.approx(math.log(0.1 / 0.9))
    assert check_state_matches_ledger(engine)["trends_off_ledger"] == 0
    with engine.begin() as conn:
        state = log_odds_at(conn, [(trend_id(engine), day_end(days[-1]))])
    assert rows[-1].log_odds == pytest.approx(list(state.values())[0])
    with engine.begin() as conn:  # the takedown is cancelled: the items, and the evidence, come back
        conn.execute(text("UPDATE takedown_requests SET status = 'cancelled'"))
    retract_withdrawn(engine)
    with engine.connect() as conn:
        restored = conn.execute(text("SELECT log_odds, first_log_odds FROM trend_snapshots ORDER BY 1")).all()
        assert conn.execute(text("SELECT count(*) FROM trend_evidence WHERE retracted_at IS NULL")).scalar_one() == 2
    assert all(r.log_odds == pytest.approx(r.first_log_odds) for r in restored)


def credibility(engine, source: str) -> float:
    with engine.connect() as conn:
        return conn.execute(text("SELECT credibility FROM sources WHERE name = :name"), {"name": source}).scalar_one()


def test_a_bad_file_gives_a_clear_error_and_leaves_the_other_trends_loaded(engine, tmp_path):
    trend_file(tmp_path, "election")
    trend_file(tmp_path, "strike", da='"togstrejke"')
    write(tmp_path / "broken.yaml", TREND.format(name="broken", title="x", half_life=30, direction="sideways",
                                                 da='"a"', en='"b"'))  # fmt: skip
    # credibility lives in the sources catalog (one place describes a source), never beside the trends
    catalog = write(
        tmp_path / "catalog" / "sources.yaml", "sources:\n  - name: dr\n    format: rss\n    credibility: 0.9\n"
    )
    with engine.begin() as conn:
        sync_catalog(conn, load_catalog(catalog.parent))
    result = sync_trends(engine, tmp_path)
    assert sorted(result.added) == ["election", "strike"]
    assert len(result.errors) == 1 and result.errors[0].startswith("broken.yaml: field indicators.0.direction")
    (tmp_path / "strike.yaml").unlink()
    result = sync_trends(engine, tmp_path)
    assert result.deactivated == ["strike"] and result.unchanged == ["election"]
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM trends WHERE NOT active")).scalar_one() == 1
    assert credibility(engine, "dr") == pytest.approx(0.9)  # the trend syncs left the catalog's rating alone
    assert set_source_credibility(engine, {"dr": 0.7}) == 1  # `observatory sources set-credibility dr 0.7`
    assert credibility(engine, "dr") == pytest.approx(0.7)


def test_after_the_horizon_the_trend_no_longer_moves(engine, world, tmp_path):
    trend_file(tmp_path, "election")
    path = tmp_path / "election.yaml"
    path.write_text(path.read_text().replace("baseline_probability", "horizon: 2026-10-05\nbaseline_probability"))
    sync_trends(engine, tmp_path)
    story(world, "valg", T0, ["dr", "tv2"])
    story(world, "late", T0 + timedelta(days=10), ["dr", "tv2"])
    update_evidence(engine)
    with engine.begin() as conn:
        tid = trend_id(engine)
        values = log_odds_at(conn, [(tid, datetime(2026, 10, 5, tzinfo=UTC)), (tid, T0 + timedelta(days=40))])
    assert len(set(values.values())) == 1
    assert date(2026, 10, 5) > T0.date()
