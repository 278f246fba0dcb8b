"""Throughput of the credit ledger: reservations under contention, and the balance over a long history.

On a fresh scratch database (bench/common.py): one query design with a year's allocation and
``--history`` collection runs already reserved, settled and released (three ledger rows each, a
year of 15-minute cycles is ~35,000). Timed:

* ``reservations_per_s`` — ``--threads`` workers reserve (row lock on the allocation) and settle
  ``--cycles`` runs in all, each movement its own transaction, against that history;
* ``balance_ms_empty`` / ``balance_ms_history`` — the median ``balance`` of a design with no ledger
  rows and of the one with the history, and their ratio;
* ``exact`` — the balance afterwards is exactly what the cycles charged.

Prints one JSON object.

    python bench/credits.py --history 35000 --cycles 2000 --threads 8
"""

import argparse
import json
import statistics
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from sqlalchemy import create_engine, text

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import scratch_database  # noqa: E402

from observatory_assets.defs.credits import ledger  # noqa: E402
from resources.settings import as_psycopg_url  # noqa: E402

PREFILL = """
WITH runs AS (
    INSERT INTO collection_runs (query_design_id, status)
    SELECT :design, 'completed' FROM generate_series(1, :n) RETURNING id
)
INSERT INTO credit_transactions (query_design_id, allocation_id, collection_run_id, kind, amount)
SELECT :design, :allocation, runs.id, movement.kind, movement.amount
  FROM runs, (VALUES ('reserve', 2.00), ('settle', 1.00), ('release', 2.00)) AS movement (kind, amount)
"""


def _median_ms(call, repeat: int = 30) -> float:
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(samples), 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--history", type=int, default=35_000, help="runs already settled (3 ledger rows each)")
    parser.add_argument("--cycles", type=int, default=2_000, help="runs reserved and settled while timed")
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args()

    today = datetime.now(UTC).date()
    with scratch_database() as url:
        engine = create_engine(as_psycopg_url(url), pool_size=args.threads + 1, max_overflow=0)
        with engine.begin() as conn:
            busy, idle = (
                conn.execute(text("INSERT INTO query_designs (name) VALUES (:n) RETURNING id"), {"n": n}).scalar_one()
                for n in ("busy", "idle")
            )
            allocation = ledger.allocate(conn, busy, 10**9, today - timedelta(days=364), today)
            ledger.allocate(conn, idle, 100, today, today)
            conn.execute(text(PREFILL), {"design": busy, "allocation": allocation, "n": args.history})
            runs = (
                conn.execute(
                    text(
                        "INSERT INTO collection_runs (query_design_id) SELECT :d FROM generate_series(1, :n) "
                        "RETURNING id"
                    ),
                    {"d": busy, "n": args.cycles},
                )
                .scalars()
                .all()
            )
        with engine.connect() as conn:
            conn.execute(text("ANALYZE"))
            conn.commit()
            balance_empty = _median_ms(lambda: ledger.balance(conn, idle))
            balance_history = _median_ms(lambda: ledger.balance(conn, busy))
            before = ledger.balance(conn, busy)

        shares = [runs[n :: args.threads] for n in range(args.threads)]

        def worker(mine: list[int]) -> None:
            with engine.connect() as conn:
                for run_id in mine:
                    with conn.begin():
                        ledger.reserve(conn, busy, run_id, "1.50")
                    with conn.begin():
                        ledger.settle(conn, run_id, "1.25")

        threads = [threading.Thread(target=worker, args=(share,)) for share in shares]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        seconds = time.perf_counter() - started
        with engine.connect() as conn:
            after = ledger.balance(conn, busy)
        engine.dispose()

    print(
        json.dumps(
            {
                "history_rows": 3 * args.history,
                "threads": args.threads,
                "cycles": args.cycles,
                "seconds": round(seconds, 3),
                "reservations_per_s": round(args.cycles / seconds, 1),
                "balance_ms_empty": balance_empty,
                "balance_ms_history": balance_history,
                "balance_history_vs_empty": round(balance_history / balance_empty, 1),
                "exact": before.available - after.available == Decimal("1.25") * args.cycles and after.held == 0,
            }
        )
    )


if __name__ == "__main__":
    main()
