"""Credits through the `observatory` command (in this process) and Dagster: allocate, a run settled by its
ingestion, balance and history, one-line errors, and the housekeeping asset with its checks."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import dagster as dg
from sqlalchemy import text

from observatory_assets.defs.credits import ledger
from observatory_assets.defs.credits.assets import credit_ledger, credit_ledger_invariants
from observatory_assets.defs.ingestion.collect import SourceRequest, collect
from tests.support.cli import invoke, one_line_error
from tests.support.helpers import write


def observatory(env: dict[str, str], *args: str):
    return invoke(*args, env=env)


def test_allocate_ingest_settle_balance_and_history(dagster_env, engine, store, tmp_path):
    with engine.begin() as conn:
        design = conn.execute(text("INSERT INTO query_designs (name) VALUES ('dk') RETURNING id")).scalar_one()
    today = datetime.now(UTC).date()
    done = observatory(dagster_env, "credits", "allocate", "dk", "10", "--from", str(today), "--until", str(today))
    assert done.exit_code == 0 and "available today 10.00" in done.stdout, done.stderr

    rows = "".join(json.dumps({"id": str(n), "title": f"item {n}", "published_at": "2026-11-01T10:00:00Z"}) + "\n"
                   for n in range(4))  # fmt: skip
    run = collect(engine, store, [SourceRequest("dr", "jsonl", path=str(write(tmp_path / "dr.jsonl", rows)))], design)
    with engine.begin() as conn:
        assert isinstance(ledger.reserve(conn, design, run, 6), ledger.Reservation)
        # the poll cycle's cost basis: two requests at 0.5, items at 250 per 1,000
        conn.execute(
            text("UPDATE collection_runs SET cost_basis = CAST(:b AS jsonb) WHERE id = :r"),
            {"b": json.dumps({"requests": 1.0, "per_1k_items": {"dr": 250}}), "r": run},
        )
    done = observatory(dagster_env, "ingest", "--run", str(run))
    assert done.exit_code == 0, done.output

    balance = json.loads(observatory(dagster_env, "credits", "balance", "dk", "--json").stdout)
    assert balance == {"design": "dk", "allocated": 10.0, "reserved": 6.0, "settled": 2.0, "released": 6.0,
                       "available": 8.0, "held": 0.0}  # fmt: skip
    every = json.loads(observatory(dagster_env, "credits", "balance", "--json").stdout)
    assert every == [balance]

    page = json.loads(observatory(dagster_env, "credits", "history", "dk", "--json", "--limit", "2").stdout)
    assert [e["kind"] for e in page["entries"]] == ["reserve", "settle"] and page["next_after"] is not None
    rest = json.loads(
        observatory(dagster_env, "credits", "history", "dk", "--json", "--after", str(page["next_after"])).stdout
    )
    assert [e["kind"] for e in rest["entries"]] == ["release"] and rest["next_after"] is None

    assert "no query design 'nope'" in one_line_error(observatory(dagster_env, "credits", "balance", "nope"))
    assert "non-negative" in one_line_error(observatory(dagster_env, "credits", "allocate", "dk", "-5"))
    assert "not a number of credits" in one_line_error(observatory(dagster_env, "credits", "allocate", "dk", "lots"))
    assert "not a date" in one_line_error(observatory(dagster_env, "credits", "allocate", "dk", "1", "--from", "x"))
    assert "1 to 200" in one_line_error(observatory(dagster_env, "credits", "history", "dk", "--limit", "500"))


def _housekeeping(resources) -> dg.ExecuteInProcessResult:
    with dg.DagsterInstance.ephemeral() as instance:
        return dg.materialize([credit_ledger, credit_ledger_invariants], instance=instance, resources=resources)


def test_housekeeping_releases_failed_runs_and_the_checks_catch_an_overspent_design(engine, resources):
    today = datetime.now(UTC).date()
    with engine.begin() as conn:
        design = conn.execute(text("INSERT INTO query_designs (name) VALUES ('dk') RETURNING id")).scalar_one()
        ledger.allocate(conn, design, 10, today, today + timedelta(days=1))
        failed, overspent = (
            conn.execute(text("INSERT INTO collection_runs (query_design_id, status) VALUES (:d, :s) RETURNING id"),
                         {"d": design, "s": status}).scalar_one()
            for status in ("failed", "completed")
        )  # fmt: skip
        ledger.reserve(conn, design, failed, 4)
        ledger.reserve(conn, design, overspent, 5)

    result = _housekeeping(resources)
    metadata = result.asset_materializations_for_node("credit_ledger")[0].metadata
    assert metadata["released_failed_runs"].value == 1 and metadata["expired_reservations"].value == 0
    assert all(e.passed for e in result.get_asset_check_evaluations())

    with engine.begin() as conn:
        ledger.settle(conn, overspent, 5)
        conn.execute(text("UPDATE credit_allocations SET amount = 3"))  # a budget lowered below what was spent
    checks = {e.check_name: e.passed for e in _housekeeping(resources).get_asset_check_evaluations()}
    assert checks == {"no_negative_balance": False, "held_within_allocated": True, "totals_match_ledger": True}
