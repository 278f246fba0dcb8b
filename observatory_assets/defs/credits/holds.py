"""Booking credits across a design's allocations: the primitives of :mod:`.ledger`'s holds and settlements.

A movement of credits (a hold, a charge, the end of a hold) is booked as parts, one per allocation, each
taken from an allocation valid that day in the order the allocations end, never more than the allocation
has left; each part is one row of the append-only ``credit_transactions``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import date
from decimal import Decimal

from sqlalchemy import Connection, text

from observatory_assets.lib.statuses import CreditTransactionKind

ZERO = Decimal("0.00")
#: An allocation valid on the day bound as ``:today``.
VALID_TODAY = "valid_from <= :today AND valid_until >= :today"


def lock_allocations(conn: Connection, design_id: int, today: date) -> list[tuple[int, Decimal]]:
    """The design's allocations valid ``today``, the one ending first first, each with what it has left
    (``amount − reserved − settled + released``), locked for the rest of the caller's transaction."""
    rows = conn.execute(
        text(
            f"SELECT id, amount - reserved - settled + released AS left FROM credit_allocations "
            f"WHERE query_design_id = :design AND {VALID_TODAY} ORDER BY valid_until, id FOR UPDATE"
        ),
        {"design": design_id, "today": today},
    ).all()
    return [(row.id, row.left) for row in rows]


def take(amount: Decimal, capacities: list[tuple[int | None, Decimal]]) -> list[tuple[int | None, Decimal]]:
    """``amount`` taken from ``capacities`` (allocation, credits it can give) in order, as (allocation,
    credits) parts; less than ``amount`` if they cannot give it all."""
    parts = []
    for allocation_id, capacity in capacities:
        part = min(amount - sum(p for _, p in parts), max(capacity, ZERO))
        if part > 0:
            parts.append((allocation_id, part))
    return parts


def book(
    conn: Connection,
    design_id: int,
    run_id: int,
    kind: CreditTransactionKind,
    parts: Iterable[tuple[int | None, Decimal]],
) -> Decimal:
    """Write one ledger row of ``kind`` per (allocation, credits) part, unless the run has that row for
    that allocation already; the credits written."""
    written = conn.execute(
        text(
            """
            INSERT INTO credit_transactions (query_design_id, allocation_id, collection_run_id, kind, amount)
            SELECT :design, part.allocation_id, :run, :kind, part.amount
              FROM jsonb_to_recordset(CAST(:parts AS jsonb)) AS part (allocation_id bigint, amount numeric)
            ON CONFLICT DO NOTHING
            RETURNING amount
            """
        ),
        {
            "design": design_id,
            "run": run_id,
            "kind": kind,
            "parts": json.dumps([{"allocation_id": a, "amount": str(amount)} for a, amount in parts]),
        },
    ).scalars()
    return sum(written, ZERO)
