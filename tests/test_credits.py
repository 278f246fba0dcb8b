"""The credit ledger on a real Postgres: reservations under a row lock, settle / release / expire
arithmetic, idempotent allocation sync, the hard stop, a cold start without any allocation."""

from __future__ import annotations

import json
import threading
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import create_engine, text

from observatory_assets.defs.credits import ledger
from observatory_assets.defs.credits.ledger import Reservation, Shortfall
from resources.settings import as_psycopg_url

TODAY = datetime.now(UTC).date()
YEAR_AGO = TODAY - timedelta(days=365)
NEXT_YEAR = TODAY + timedelta(days=365)


def new_design(conn, name: str = "danish-politics") -> int:
    return conn.execute(text("INSERT INTO query_designs (name) VALUES (:n) RETURNING id"), {"n": name}).scalar_one()


def new_run(conn, design_id: int | None, status: str = "pending") -> int:
    return conn.execute(
        text("INSERT INTO collection_runs (query_design_id, status) VALUES (:d, :s) RETURNING id"),
        {"d": design_id, "s": status},
    ).scalar_one()


def test_cold_start_without_allocation_is_a_shortfall_and_a_zero_balance(engine):
    with engine.begin() as conn:
        design = new_design(conn)
        run = new_run(conn, design)
        outcome = ledger.reserve(conn, design, run, 5)
        assert outcome == Shortfall(design, Decimal("0.00"), Decimal("5.00"))
        free = ledger.reserve(conn, design, new_run(conn, design), 0)  # a design of free sources needs no budget
        assert isinstance(free, Reservation) and free.amount == 0 and free.allocation_id is None
        balance = ledger.balance(conn, "danish-politics")
    assert balance.as_json() == {
        "design": "danish-politics",
        "allocated": 0.0,
        "reserved": 0.0,
        "settled": 0.0,
        "released": 0.0,
        "available": 0.0,
        "held": 0.0,
    }


def test_allocation_sync_is_idempotent(engine):
    with engine.begin() as conn:
        design = new_design(conn)
        assert ledger.sync_allocation(conn, design, 100, YEAR_AGO, NEXT_YEAR) is True
        assert ledger.sync_allocation(conn, design, "100.00", YEAR_AGO, NEXT_YEAR) is False
        assert ledger.balance(conn, design).allocated == Decimal("100.00")
        assert ledger.sync_allocation(conn, design, 120, YEAR_AGO, NEXT_YEAR) is True  # the catalog raised it
        assert conn.execute(text("SELECT count(*), sum(amount) FROM credit_allocations")).one() == (1, Decimal("120"))
        with pytest.raises(ValueError, match="before its valid_from"):
            ledger.sync_allocation(conn, design, 1, NEXT_YEAR, YEAR_AGO)
        for bad in (-1, "nan", "1e30", "lots"):
            with pytest.raises(ValueError, match="credits"):
                ledger.sync_allocation(conn, design, bad, YEAR_AGO, NEXT_YEAR)


def test_only_allocations_valid_today_count(engine):
    with engine.begin() as conn:
        design = new_design(conn)
        ledger.allocate(conn, design, 50, YEAR_AGO, TODAY - timedelta(days=1))  # over yesterday
        ledger.allocate(conn, design, 30, TODAY + timedelta(days=1), NEXT_YEAR)  # from tomorrow
        ledger.allocate(conn, design, 7, TODAY, TODAY)  # today only
        assert ledger.balance(conn, design).allocated == Decimal("7.00")
        assert ledger.balance(conn, design, today=TODAY + timedelta(days=2)).allocated == Decimal("30.00")


def test_settle_release_expire_arithmetic(engine):
    with engine.begin() as conn:
        design = new_design(conn)
        ledger.allocate(conn, design, 100, YEAR_AGO, NEXT_YEAR)
        settled_run, failed_run, stale_run = (new_run(conn, design) for _ in range(3))
        assert isinstance(ledger.reserve(conn, design, settled_run, 10), Reservation)
        assert ledger.reserve(conn, design, settled_run, 99) == Reservation(settled_run, design, 1, Decimal("10.00"))
        ledger.reserve(conn, design, failed_run, "20.001")  # an estimate is rounded up to the hundredth
        ledger.reserve(conn, design, stale_run, 30)
        held = ledger.balance(conn, design)
        assert (held.reserved, held.held, held.available) == (Decimal("60.01"), Decimal("60.01"), Decimal("39.99"))

        settlement = ledger.settle(conn, settled_run, Decimal("7.5"))
        assert (settlement.actual, settlement.released) == (Decimal("7.50"), Decimal("10.00"))
        assert ledger.settle(conn, settled_run, 3).actual == Decimal("7.50")  # once per run
        assert ledger.balance(conn, design).available == Decimal("100") - Decimal("7.5") - Decimal("50.01")

        assert ledger.release(conn, failed_run) == Decimal("20.01")
        assert ledger.release(conn, failed_run) == 0
        assert ledger.expire(conn, datetime.now(UTC)) == 0  # nothing is 24 h old yet
        assert ledger.expire(conn, datetime.now(UTC) + timedelta(hours=25)) == 1
        assert ledger.expire(conn, datetime.now(UTC) + timedelta(hours=25)) == 0

        final = ledger.balance(conn, design)
        assert final.as_json() == {
            "design": "danish-politics",
            "allocated": 100.0,
            "reserved": 60.01,
            "settled": 7.5,
            "released": 60.01,
            "available": 92.5,
            "held": 0.0,
        }
        assert conn.execute(text("SELECT credits_estimated, credits_used FROM collection_runs WHERE id = :r"),
                            {"r": settled_run}).one() == (Decimal("10.00"), Decimal("7.50"))  # fmt: skip
        # an expired run that finishes after all is still charged what it cost
        assert ledger.settle(conn, stale_run, 4) == ledger.Settlement(stale_run, Decimal("4.00"), Decimal("0.00"))
        assert ledger.balance(conn, design).available == Decimal("88.50")
        assert [e.kind for e in ledger.history(conn, design)] == [
            "reserve", "reserve", "reserve", "settle", "release", "release", "expire", "settle",
        ]  # fmt: skip


def test_a_budget_that_runs_out_mid_day_is_a_shortfall(engine):
    with engine.begin() as conn:
        design = new_design(conn)
        ledger.sync_allocation(conn, design, 25, TODAY, TODAY)
        morning, noon, evening = (new_run(conn, design) for _ in range(3))
        ledger.reserve(conn, design, morning, 10)
        ledger.settle(conn, morning, 12)
        assert isinstance(ledger.reserve(conn, design, noon, 10), Reservation)
        outcome = ledger.reserve(conn, design, evening, 10)
        assert outcome == Shortfall(design, Decimal("3.00"), Decimal("10.00")) and outcome.missing == Decimal("7.00")
        assert conn.execute(text("SELECT count(*) FROM credit_transactions WHERE collection_run_id = :r"),
                            {"r": evening}).scalar_one() == 0  # fmt: skip


def test_failed_runs_release_their_holds_but_pay_for_requests_sent(engine):
    with engine.begin() as conn:
        design = new_design(conn)
        ledger.allocate(conn, design, 20, TODAY, NEXT_YEAR)
        failed_early, failed_after_requests, running = (new_run(conn, design) for _ in range(3))
        ledger.reserve(conn, design, failed_early, 4)
        ledger.reserve(conn, design, failed_after_requests, 6)
        ledger.reserve(conn, design, running, 5)
        ledger.record_cost_basis(conn, failed_after_requests, "1.25", {"dr": 10})
        conn.execute(
            text("UPDATE collection_runs SET status = 'failed' WHERE id = ANY(:r)"),
            {"r": [failed_early, failed_after_requests]},
        )
        assert ledger.release_failed_runs(conn) == 2
        assert ledger.release_failed_runs(conn) == 0
        balance = ledger.balance(conn, design)
        assert (balance.settled, balance.held, balance.available) == (
            Decimal("1.25"),
            Decimal("5.00"),
            Decimal("13.75"),
        )


def test_the_ledger_is_append_only(engine):
    with engine.begin() as conn:
        design = new_design(conn)
        ledger.allocate(conn, design, 10, TODAY, NEXT_YEAR)
        ledger.reserve(conn, design, new_run(conn, design), 4)
    for statement in ("UPDATE credit_transactions SET amount = 0", "DELETE FROM credit_transactions"):
        with pytest.raises(Exception, match="append-only"), engine.begin() as conn:
            conn.execute(text(statement))


def test_actual_cost_counts_requests_and_loaded_items_per_payload(engine):
    with engine.begin() as conn:
        design = new_design(conn)
        run = new_run(conn, design, status="completed")
        for name in ("dr", "tv2"):
            conn.execute(text("INSERT INTO sources (name, type) VALUES (:n, 'rss')"), {"n": name})
        manifest = [{"name": "dr", "records": 3}, {"name": "tv2", "records": 2}]
        conn.execute(
            text("UPDATE collection_runs SET payloads = CAST(:m AS jsonb) WHERE id = :r"),
            {"m": json.dumps(manifest), "r": run},
        )
        ledger.record_cost_basis(conn, run, "1.5", {"dr": 100, "tv2": Decimal("1000")})
        # records 1-3 came from dr (two loaded, one a duplicate), 4-5 from tv2 (one loaded)
        for record_no, source in ((1, "dr"), (2, "dr"), (5, "tv2")):
            conn.execute(
                text(
                    "INSERT INTO raw_items (id, source_id, collection_run_id, record_no, external_id, fetched_at, "
                    "content_hash) SELECT :no, id, :r, :no, :no, now(), 'x' FROM sources WHERE name = :s"
                ),
                {"no": record_no, "r": run, "s": source},
            )
        assert ledger.actual_cost(conn, run) == Decimal("1.5") + Decimal("0.2") + Decimal("1")
        assert ledger.settle_ingested_run(conn, run) is None  # nothing was reserved: nothing to settle
        ledger.allocate(conn, design, 10, TODAY, NEXT_YEAR)
        ledger.reserve(conn, design, run, 5)
        assert ledger.settle_ingested_run(conn, run).actual == Decimal("2.70")
        unmetered = new_run(conn, design)
        assert ledger.actual_cost(conn, unmetered) is None


def test_history_pages_by_keyset(engine):
    with engine.begin() as conn:
        design = new_design(conn)
        ledger.allocate(conn, design, 1000, TODAY, NEXT_YEAR)
        for _ in range(5):
            ledger.reserve(conn, design, new_run(conn, design), 1)
        first = ledger.history(conn, "danish-politics", limit=3)
        second = ledger.history(conn, "danish-politics", after_id=first[-1].id, limit=3)
        assert [e.id for e in first + second] == sorted({e.id for e in first + second}) and len(second) == 2
        with pytest.raises(ValueError, match="1 to 200"):
            ledger.history(conn, design, limit=201)
        with pytest.raises(ledger.UnknownDesign):
            ledger.history(conn, "nope")


def test_twenty_concurrent_reservations_against_ten_credits_leave_exactly_ten_reserved(engine, database_url):
    twenty_connections = create_engine(as_psycopg_url(database_url), pool_size=20, max_overflow=0)
    with engine.begin() as conn:
        design = new_design(conn)
        ledger.sync_allocation(conn, design, 10, date(2000, 1, 1), NEXT_YEAR)
        runs = [new_run(conn, design) for _ in range(20)]
    barrier = threading.Barrier(20)
    outcomes: list = []

    def reserve_one(run_id: int) -> None:
        with twenty_connections.connect() as conn:
            barrier.wait()
            with conn.begin():
                outcomes.append(ledger.reserve(conn, design, run_id, 1))

    threads = [threading.Thread(target=reserve_one, args=(run,)) for run in runs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    twenty_connections.dispose()
    assert sum(isinstance(o, Reservation) for o in outcomes) == 10
    assert sum(isinstance(o, Shortfall) for o in outcomes) == 10
    with engine.connect() as conn:
        balance = ledger.balance(conn, design)
        assert (balance.held, balance.available) == (Decimal("10.00"), Decimal("0.00"))
        assert ledger.ledger_violations(conn) == {
            "negative_balance": [],
            "held_above_allocated": [],
            "totals_off_ledger": [],
        }


def test_violations_name_the_overspent_design(engine):
    with engine.begin() as conn:
        design = new_design(conn)
        ledger.allocate(conn, design, 5, TODAY, NEXT_YEAR)
        run = new_run(conn, design)
        ledger.reserve(conn, design, run, 5)
        ledger.settle(conn, run, 5)
        conn.execute(text("UPDATE credit_allocations SET amount = 3"))  # a budget lowered below what was spent
        found = ledger.ledger_violations(conn)
        assert [b["design"] for b in found["negative_balance"]] == ["danish-politics"]
        assert found["held_above_allocated"] == [] and found["totals_off_ledger"] == []
        conn.execute(text("UPDATE credit_allocations SET settled = settled - 5"))  # totals edited by hand
        (off,) = ledger.ledger_violations(conn)["totals_off_ledger"]
        assert (off["settled"], off["ledger_settled"]) == ("0.00", "5.00")


def test_an_expiring_allocation_takes_only_its_own_spending_with_it(engine):
    with engine.begin() as conn:
        design = new_design(conn)
        ledger.allocate(conn, design, 10, YEAR_AGO, TODAY)  # ends today
        ledger.allocate(conn, design, 100, YEAR_AGO, NEXT_YEAR)
        run = new_run(conn, design)
        held = ledger.reserve(conn, design, run, 60)  # booked across both: 10 + 50
        assert [amount for _, amount in held.parts] == [Decimal("10.00"), Decimal("50.00")]
        assert ledger.settle(conn, run, 60).actual == Decimal("60.00")
        assert ledger.balance(conn, design).available == Decimal("50.00")
        tomorrow = ledger.balance(conn, design, today=TODAY + timedelta(days=1))
        assert (tomorrow.allocated, tomorrow.available, tomorrow.held) == (Decimal("100.00"), Decimal("50.00"), 0)
        assert ledger.ledger_violations(conn)["totals_off_ledger"] == []


def test_a_settlement_beyond_what_the_design_can_pay_is_bounded_and_audited(engine):
    with engine.begin() as conn:
        design = new_design(conn)
        ledger.allocate(conn, design, 10, TODAY, NEXT_YEAR)
        run = new_run(conn, design)
        ledger.reserve(conn, design, run, 4)
        settlement = ledger.settle(conn, run, 25)  # its items cost far more than its hold
        assert (settlement.actual, settlement.released, settlement.unpaid) == (
            Decimal("10.00"), Decimal("4.00"), Decimal("15.00")
        )  # fmt: skip
        assert ledger.balance(conn, design).available == 0  # never below zero
        assert ledger.ledger_violations(conn)["negative_balance"] == []
        audit = conn.execute(text("SELECT object_id, details FROM audit_log WHERE action = 'credits.overrun'")).one()
        assert audit.object_id == str(run) and audit.details["unpaid"] == "15.00"
        assert isinstance(ledger.reserve(conn, design, new_run(conn, design), 1), Shortfall)  # the next cycle stops
        assert ledger.settle(conn, run, 1).actual == Decimal("10.00")  # once per run
