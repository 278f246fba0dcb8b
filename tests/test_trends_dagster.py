"""Trends through Dagster and the CLI: the update_trends job in-process (evidence, snapshot, chart, checks),
the daily schedule, ``observatory trends explain --json`` and ``sources set-credibility``."""

import json
import subprocess
from datetime import UTC, datetime, timedelta

import dagster as dg
from sqlalchemy import text

from observatory_assets.definitions import defs
from observatory_assets.defs.trends.jobs import daily_trend_snapshot
from tests.conftest import ROOT
from tests.support.trend_world import TrendWorld
from tests.test_trends import story, trend_file

NOW = datetime.now(UTC).replace(microsecond=0)


def test_update_trends_job_writes_evidence_snapshot_chart_and_passes_its_checks(engine, resources, objects_root,
                                                                               tmp_path):  # fmt: skip
    trend_file(tmp_path / "trends", "election")
    world = TrendWorld(engine)
    _, items = story(world, "valg", NOW.replace(hour=0, minute=1, second=0), ["dr", "tv2"])
    today = NOW.date().isoformat()

    def update():
        return defs.resolve_job_def("update_trends").execute_in_process(
            partition_key=today,
            resources=resources,
            run_config={"ops": {"trend_evidence": {"config": {"trends_dir": str(tmp_path / "trends")}}}},
            raise_on_error=False,
        )

    result = update()
    assert result.success
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {"trend_state_matches_ledger": True, "snapshots_match_ledger": True,
                      "yesterday_snapshot_exists": True}  # fmt: skip
    snapshot = result.asset_materializations_for_node("trend_snapshots")[0].metadata
    assert snapshot["rows_written"].value == 1
    assert "data:image/png;base64," in snapshot["charts"].value
    assert "'folketingsvalg'" in snapshot["biggest_moves"].value
    assert (objects_root / "trends/charts/election.png").read_bytes()[:4] == b"\x89PNG"
    evidence = result.asset_materializations_for_node("trend_evidence")[0].metadata
    assert (evidence["evidence_added"].value, evidence["active_trends"].value) == (1, 1)
    with engine.connect() as conn:
        days = conn.execute(text("SELECT snapshot_date FROM trend_snapshots ORDER BY 1")).scalars().all()
    assert [d.isoformat() for d in days] == [(NOW.date() - timedelta(days=1)).isoformat(), today]

    world.take_down(items)
    again = update()
    assert again.success
    restated = [m for m in again.asset_materializations_for_node("trend_evidence")
                if m.asset_key == dg.AssetKey("trend_snapshots")]  # fmt: skip
    assert [m.partition for m in restated] == [today]
    with engine.connect() as conn:
        row = conn.execute(text("SELECT log_odds, first_log_odds, restated_at FROM trend_snapshots "
                                "WHERE snapshot_date = :d"), {"d": NOW.date()}).one()  # fmt: skip
    assert row.restated_at is not None and row.log_odds < row.first_log_odds


def test_daily_schedule_snapshots_yesterday_at_half_past_midnight_utc():
    with dg.instance_for_test() as instance:
        context = dg.build_schedule_context(
            instance=instance,
            scheduled_execution_time=datetime(2026, 12, 1, 0, 30, tzinfo=UTC),
            repository_def=defs.get_repository_def(),
        )
        request = daily_trend_snapshot.evaluate_tick(context).run_requests[0]
    assert request.partition_key == "2026-11-30"


def run(env, *args) -> subprocess.CompletedProcess:
    return subprocess.run(["observatory", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_cli_sync_update_explain_json_and_set_credibility(dagster_env, engine, tmp_path):
    folder = tmp_path / "trends"
    trend_file(folder, "election")
    env = {**dagster_env, "OBSERVATORY_TRENDS_DIR": str(folder)}
    _, items = story(TrendWorld(engine), "valg", NOW - timedelta(days=1), ["dr", "tv2"])
    assert run(env, "sources", "set-credibility", "dr", "0.9").returncode == 0
    bad = run(env, "sources", "set-credibility", "dr", "1.5")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "from 0 to 1" in bad.stderr
    updated = run(env, "trends", "update")
    assert updated.returncode == 0, updated.stderr
    assert "election" in updated.stdout
    report = json.loads(run(env, "trends", "explain", "election", "--json").stdout)
    assert set(report) == {"trend", "title", "probability", "log_odds", "baseline_probability", "as_of", "evidence"}
    (evidence,) = report["evidence"]
    assert set(evidence) == {"event_id", "indicator", "at", "delta_log_odds", "credibility", "corroboration",
                             "novelty", "severity", "reasoning", "retracted", "items"}  # fmt: skip
    assert evidence["credibility"] == 0.7  # mean of dr 0.9 and tv2 0.5
    assert {i["source"] for i in evidence["items"]} == {"dr", "tv2"}
    assert set(evidence["items"][0]) == {"source", "external_id", "url", "title"}
    assert report["probability"] > report["baseline_probability"]
    before = json.loads(run(env, "trends", "explain", "election", "--json", "--at",
                            (NOW.date() - timedelta(days=3)).isoformat()).stdout)  # fmt: skip
    assert before["evidence"] == [] and abs(before["probability"] - 0.1) < 1e-9
    shown = run(env, "trends", "show", "election")
    assert shown.returncode == 0 and f"{NOW.date()}  " in shown.stdout and "question: Will it happen?" in shown.stdout
    listed = run(env, "trends", "list")
    assert listed.returncode == 0 and listed.stdout.splitlines()[1].startswith("election ")
    missing = run(env, "trends", "explain", "nope")
    assert missing.returncode == 2 and "no trend named 'nope'" in missing.stderr
