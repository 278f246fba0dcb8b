"""The credit ledger: what a query design may spend, what it holds, what it spent.

A design receives **allocations** (credits valid from one UTC day to another). Spending follows the
two-phase transfers of TigerBeetle: before a poll cycle sends a request it **reserves** its estimate,
taken under a row lock on the design's allocations so that concurrent cycles cannot overspend; once
the run is ingested it is **settled** with its actual cost and its hold is **released**, so a
surplus returns by itself; a failed run's hold is released; a hold older than 24 h **expires**.

A hold is **booked across allocations**: it takes what each allocation valid today has left, the one
ending first first, one ledger row per allocation; a settlement charges the same allocations, so an
allocation that expires takes only its own movements with it (never another's spending).

**Settlement is bounded**: a run is charged its actual cost up to what its design can still pay, its
hold plus what its allocations valid today have left; the rest is not charged, it is audited
(``credits.overrun``) and leaves the design with nothing, so its next cycle stops on the shortfall.
A balance never goes below zero by a settlement.

Every movement is a row of the append-only ``credit_transactions``, keyed by collection run and
allocation, and the balance is the seed's arithmetic over the allocations valid today (UTC):
``available = allocated − reserved − settled + released`` (expired holds count as released). Every
function takes the caller's connection, so a movement commits with the action it pays for, or not at
all.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal, InvalidOperation

from sqlalchemy import Connection, text

from observatory_assets.defs.credits import holds
from observatory_assets.defs.credits.holds import VALID_TODAY, ZERO
from observatory_assets.lib.audit import record_audit
from observatory_assets.lib.statuses import CollectionRunStatus, CreditTransactionKind

#: A reservation older than this expires: its run never settled nor failed in time.
RESERVATION_TTL = timedelta(hours=24)
#: The most ledger rows ``history`` returns in one page.
MAX_HISTORY_PAGE = 200
CENT = Decimal("0.01")
#: The kinds of ledger rows, bound in the SQL below as ``:reserve``, ``:settle``, ``:release`` and ``:expire``.
_KINDS = {kind.value: kind for kind in CreditTransactionKind}


class UnknownDesign(ValueError):
    """A query design that does not exist."""


@dataclass(frozen=True)
class Reservation:
    """Credits held for a collection run: ``amount`` in all, booked as ``parts`` (allocation id, credits)
    on the allocations it was taken from; ``allocation_id`` is the first of them (None for a zero hold
    without budget)."""

    collection_run_id: int
    design_id: int
    allocation_id: int | None
    amount: Decimal
    parts: tuple[tuple[int | None, Decimal], ...] = field(default=(), compare=False)


@dataclass(frozen=True)
class Shortfall:
    """The hard stop: the design cannot cover ``needed``; nothing was reserved."""

    design_id: int
    available: Decimal
    needed: Decimal

    @property
    def missing(self) -> Decimal:
        return self.needed - self.available


@dataclass(frozen=True)
class Settlement:
    """What a run was charged (``actual``), the hold its settlement released (zero if none was open), and
    the part of its cost its design could not pay (``unpaid``: not charged, audited)."""

    collection_run_id: int
    actual: Decimal
    released: Decimal
    unpaid: Decimal = ZERO


@dataclass(frozen=True)
class Balance:
    """A design's credits over the allocations valid today. ``held`` is the part of ``reserved``
    still held by runs that are neither settled, released nor expired."""

    design: str
    allocated: Decimal
    reserved: Decimal
    settled: Decimal
    released: Decimal
    available: Decimal
    held: Decimal

    def as_json(self) -> dict:
        return {
            "design": self.design,
            **{
                name: float(getattr(self, name))
                for name in ("allocated", "reserved", "settled", "released", "available", "held")
            },
        }


@dataclass(frozen=True)
class LedgerEntry:
    """One row of the ledger."""

    id: int
    created_at: datetime
    kind: str
    collection_run_id: int
    allocation_id: int | None
    amount: Decimal

    def as_json(self) -> dict:
        return {
            "id": self.id,
            "created_at": self.created_at.isoformat(),
            "kind": self.kind,
            "collection_run_id": self.collection_run_id,
            "allocation_id": self.allocation_id,
            "amount": float(self.amount),
        }


def _rate(value: object) -> Decimal:
    """A price or amount in credits at full precision (a rate per 1,000 items may be finer than a
    hundredth), or ValueError in one line."""
    try:
        rate = Decimal(str(value))
    except InvalidOperation:
        raise ValueError(f"not a number of credits: {value!r}") from None
    if not rate.is_finite() or rate < 0:
        raise ValueError(f"a number of credits must be non-negative, not {value!r}")
    return rate


def credits(value: object, rounding: str = ROUND_HALF_UP) -> Decimal:
    """An amount of credits (non-negative, finite, in hundredths), or ValueError in one line."""
    amount = _rate(value)
    if amount >= Decimal("1e10"):
        raise ValueError(f"an amount of credits must be below 10,000,000,000, not {value!r}")
    return amount.quantize(CENT, rounding=rounding)


def find_design(conn: Connection, design: str | int) -> tuple[int, str]:
    """(id, name) of a query design given by name or id; UnknownDesign if there is none."""
    by_id, by_name = (
        "SELECT id, name FROM query_designs WHERE id = :design",
        "SELECT id, name FROM query_designs WHERE name = :design",
    )
    row = conn.execute(text(by_id if isinstance(design, int) else by_name), {"design": design}).one_or_none()
    if row is None:
        raise UnknownDesign(f"no query design {design!r}")
    return row.id, row.name


_TOTALS = f"""
SELECT coalesce(sum(amount), 0) AS allocated, coalesce(sum(reserved), 0) AS reserved,
       coalesce(sum(settled), 0) AS settled, coalesce(sum(released), 0) AS released
  FROM credit_allocations
 WHERE query_design_id = :design AND {VALID_TODAY}
"""  # noqa: S608 (no input in the text)


def _utc_today() -> date:
    return datetime.now(UTC).date()


def balance(conn: Connection, design: str | int, today: date | None = None) -> Balance:
    """The design's balance over the allocations valid ``today`` (default: today in UTC)."""
    design_key, name = find_design(conn, design)
    row = conn.execute(text(_TOTALS), {"design": design_key, "today": today or _utc_today()}).one()
    available = row.allocated - row.reserved - row.settled + row.released
    # a hold always ends by giving back its whole amount, so what is still held is reserved − released
    held = row.reserved - row.released
    return Balance(name, row.allocated, row.reserved, row.settled, row.released, available, held)


def sync_allocation(conn: Connection, design_id: int, amount: object, valid_from: date, valid_until: date) -> bool:
    """Make the design's catalog budget ``amount`` credits valid from ``valid_from`` to ``valid_until``
    (inclusive). Idempotent: syncing an unchanged budget writes nothing. Returns whether it changed."""
    amount = credits(amount)
    if valid_until < valid_from:
        raise ValueError(f"a budget's valid_until ({valid_until}) is before its valid_from ({valid_from})")
    changed = conn.execute(
        text(
            """
            INSERT INTO credit_allocations (query_design_id, origin, amount, valid_from, valid_until)
            VALUES (:design, 'catalog', :amount, :valid_from, :valid_until)
            ON CONFLICT (query_design_id) WHERE origin = 'catalog' DO UPDATE
               SET amount = excluded.amount, valid_from = excluded.valid_from,
                   valid_until = excluded.valid_until, updated_at = now()
             WHERE (credit_allocations.amount, credit_allocations.valid_from, credit_allocations.valid_until)
                   IS DISTINCT FROM (excluded.amount, excluded.valid_from, excluded.valid_until)
            RETURNING id
            """
        ),
        {"design": design_id, "amount": amount, "valid_from": valid_from, "valid_until": valid_until},
    ).one_or_none()
    return changed is not None


def allocate(conn: Connection, design_id: int, amount: object, valid_from: date, valid_until: date) -> int:
    """Add a top-up of ``amount`` credits to the design, valid from/until the given days; returns its id."""
    amount = credits(amount)
    if valid_until < valid_from:
        raise ValueError(f"--until ({valid_until}) is before --from ({valid_from})")
    return conn.execute(
        text(
            """
            INSERT INTO credit_allocations (query_design_id, origin, amount, valid_from, valid_until)
            VALUES (:design, 'manual', :amount, :valid_from, :valid_until) RETURNING id
            """
        ),
        {"design": design_id, "amount": amount, "valid_from": valid_from, "valid_until": valid_until},
    ).scalar_one()


def _existing_reservation(conn: Connection, collection_run_id: int) -> Reservation | None:
    rows = conn.execute(
        text(
            "SELECT query_design_id, allocation_id, amount FROM credit_transactions "
            "WHERE collection_run_id = :run AND kind = :reserve ORDER BY id"
        ),
        {"run": collection_run_id, "reserve": CreditTransactionKind.RESERVE},
    ).all()
    if not rows:
        return None
    parts = tuple((row.allocation_id, row.amount) for row in rows)
    return Reservation(
        collection_run_id, rows[0].query_design_id, rows[0].allocation_id, sum(a for _, a in parts), parts
    )


def reserve(conn: Connection, design_id: int, collection_run_id: int, amount: object) -> Reservation | Shortfall:
    """Hold ``amount`` credits (rounded up to the hundredth) of the design for a collection run, booked
    across the allocations valid today (the one ending first first), or return the shortfall when they
    cannot cover it (nothing is written then).

    The design's allocations valid today are locked (``FOR UPDATE``) for the rest of the caller's
    transaction, so concurrent reservations are taken one after the other and never overspend.
    Reserving again for the same run returns the existing reservation.
    """
    needed = credits(amount, rounding=ROUND_CEILING)
    existing = _existing_reservation(conn, collection_run_id)
    if existing is not None:
        return existing
    allocations = holds.lock_allocations(conn, design_id, _utc_today())
    existing = _existing_reservation(conn, collection_run_id)  # a concurrent caller may have reserved it
    if existing is not None:
        return existing
    available = sum((left for _, left in allocations), ZERO)
    if needed > 0 and (not allocations or available < needed):
        return Shortfall(design_id, max(available, ZERO), needed)
    parts = holds.take(needed, allocations) or [(allocations[0][0] if allocations else None, ZERO)]
    holds.book(conn, design_id, collection_run_id, CreditTransactionKind.RESERVE, parts)
    conn.execute(
        text("UPDATE collection_runs SET credits_estimated = :amount WHERE id = :run"),
        {"amount": needed, "run": collection_run_id},
    )
    return Reservation(collection_run_id, design_id, parts[0][0], needed, tuple(parts))


def _end_hold(conn: Connection, reservation: Reservation, kind: CreditTransactionKind) -> Decimal:
    """Write the rows that end the run's hold (``release`` or ``expire``), one per allocation it was booked
    on, unless it already ended; returns the credits it gave back."""
    return holds.book(conn, reservation.design_id, reservation.collection_run_id, kind, reservation.parts)


def _hold_open(conn: Connection, collection_run_id: int) -> bool:
    return not conn.execute(
        text("SELECT 1 FROM credit_transactions WHERE collection_run_id = :run AND kind IN (:release, :expire)"),
        {"run": collection_run_id, **_KINDS},
    ).first()


def _charges(conn: Connection, reservation: Reservation, cost: Decimal) -> list[tuple[int | None, Decimal]]:
    """How ``cost`` is charged: on the allocations valid today, those the hold was booked on first (each up
    to its part of a hold still open plus what it has left), then the others (what they have left);
    never more than they can pay."""
    held = dict(reservation.parts) if _hold_open(conn, reservation.collection_run_id) else {}
    valid = holds.lock_allocations(conn, reservation.design_id, _utc_today())
    capacities = [(a, max(left, ZERO) + held.get(a, ZERO)) for a, left in valid]
    order = [a for a, _ in reservation.parts]
    capacities.sort(key=lambda c: order.index(c[0]) if c[0] in order else len(order))
    return holds.take(cost, capacities)


def settle(conn: Connection, collection_run_id: int, actual: object) -> Settlement | None:
    """Charge the run's actual cost (bounded: see the module's docstring) and release its hold, so the
    surplus of the estimate returns to the design. Once per run: settling again changes nothing and
    returns the first settlement. None when the run reserved nothing (a run collected by hand)."""
    reservation = _existing_reservation(conn, collection_run_id)
    if reservation is None:
        return None
    cost = credits(actual)
    first = conn.execute(
        text("SELECT sum(amount) FROM credit_transactions WHERE collection_run_id = :run AND kind = :settle"),
        {"run": collection_run_id, "settle": CreditTransactionKind.SETTLE},
    ).scalar_one()
    if first is not None:
        return Settlement(collection_run_id, first, ZERO)
    parts = _charges(conn, reservation, cost) or [(reservation.allocation_id, ZERO)]
    charged = sum((amount for _, amount in parts), ZERO)
    holds.book(conn, reservation.design_id, collection_run_id, CreditTransactionKind.SETTLE, parts)
    released = _end_hold(conn, reservation, CreditTransactionKind.RELEASE)
    conn.execute(
        text("UPDATE collection_runs SET credits_used = :amount WHERE id = :run"),
        {"amount": charged, "run": collection_run_id},
    )
    if charged < cost:
        details = {"cost": str(cost), "charged": str(charged), "unpaid": str(cost - charged)}
        record_audit(conn, "ledger", "credits.overrun", "collection_run", collection_run_id, None, "unpaid", details)
    return Settlement(collection_run_id, charged, released, cost - charged)


def release(conn: Connection, collection_run_id: int) -> Decimal:
    """Give back the whole hold of a failed run; returns the credits released (zero if there was no
    open hold). Idempotent."""
    reservation = _existing_reservation(conn, collection_run_id)
    return ZERO if reservation is None else _end_hold(conn, reservation, CreditTransactionKind.RELEASE)


def release_failed_runs(conn: Connection) -> int:
    """End the open hold of every failed collection run; returns how many. A run whose requests were
    sent (it has a cost basis) is settled at the cost of its requests, which are due whatever the
    answer; a run without one is released whole."""
    failed = conn.execute(
        text(
            """
            SELECT r.collection_run_id, (c.cost_basis ->> 'requests')::numeric AS request_cost
              FROM credit_transactions r
              JOIN collection_runs c ON c.id = r.collection_run_id AND c.status = :failed
             WHERE r.kind = :reserve
               AND NOT EXISTS (SELECT 1 FROM credit_transactions e
                                WHERE e.collection_run_id = r.collection_run_id AND e.kind IN (:release, :expire))
            """
        ),
        {"failed": CollectionRunStatus.FAILED, **_KINDS},
    ).all()
    for run in failed:
        if run.request_cost is None:
            release(conn, run.collection_run_id)
        else:
            settle(conn, run.collection_run_id, run.request_cost)
    return len(failed)


def expire(conn: Connection, now: datetime) -> int:
    """Expire every hold reserved more than 24 h before ``now`` that is still open; returns how many."""
    expired = conn.execute(
        text(
            """
            INSERT INTO credit_transactions (query_design_id, allocation_id, collection_run_id, kind, amount)
            SELECT r.query_design_id, r.allocation_id, r.collection_run_id, :expire, r.amount
              FROM credit_transactions r LEFT JOIN credit_allocations a ON a.id = r.allocation_id
             WHERE r.kind = :reserve AND r.created_at < :cutoff
               AND NOT EXISTS (SELECT 1 FROM credit_transactions e
                                WHERE e.collection_run_id = r.collection_run_id AND e.kind IN (:release, :expire))
             ORDER BY a.valid_until, a.id  -- the order reservations lock allocations in
            ON CONFLICT DO NOTHING
            RETURNING collection_run_id
            """
        ),
        {"cutoff": now - RESERVATION_TTL, **_KINDS},
    )
    return len(set(expired.scalars()))


def record_cost_basis(
    conn: Connection, collection_run_id: int, request_cost: object, per_1k_items: dict[str, object]
) -> None:
    """Tell the ledger what a poll cycle's run costs: ``request_cost`` credits for every request sent
    (a 304 or an error included) and, per source name of its payloads, the credits per 1,000 items
    once loaded; both already the design's share of a source shared by several designs. Ingestion then
    settles the run at that cost (:func:`settle_ingested_run`). Writing it again replaces it."""
    basis = {
        "requests": str(credits(request_cost)),
        "per_1k_items": {source: str(_rate(rate)) for source, rate in per_1k_items.items()},
    }
    conn.execute(
        text("UPDATE collection_runs SET cost_basis = CAST(:basis AS jsonb) WHERE id = :run"),
        {"basis": json.dumps(basis), "run": collection_run_id},
    )


ACTUAL_COST = """
WITH run AS (
    SELECT cost_basis, payloads FROM collection_runs WHERE id = :run
), payload_ranges AS (
    -- ingestion numbers a run's records 1.. across its payloads in manifest order
    SELECT p.payload ->> 'name' AS source,
           coalesce(sum((p.payload ->> 'records')::bigint) OVER (ORDER BY p.n), 0)
               - coalesce((p.payload ->> 'records')::bigint, 0) AS first_before,
           coalesce(sum((p.payload ->> 'records')::bigint) OVER (ORDER BY p.n), 0) AS last
      FROM run, jsonb_array_elements(run.payloads) WITH ORDINALITY AS p (payload, n)
), loaded AS (
    SELECT pr.source, count(i.record_no) AS items
      FROM payload_ranges pr
      LEFT JOIN raw_items i ON i.collection_run_id = :run AND i.record_no > pr.first_before AND i.record_no <= pr.last
     GROUP BY pr.source
)
SELECT coalesce((run.cost_basis ->> 'requests')::numeric, 0)
       + coalesce((SELECT sum(loaded.items * coalesce((run.cost_basis -> 'per_1k_items' ->> loaded.source)::numeric, 0))
                     FROM loaded), 0) / 1000 AS actual,
       run.cost_basis IS NOT NULL AS metered
  FROM run
"""


def actual_cost(conn: Connection, collection_run_id: int) -> Decimal | None:
    """What an ingested run cost, from its ``cost_basis`` (``{"requests": credits of every request
    sent, whatever the answer, "per_1k_items": {source: credits per 1,000 loaded items}}``, each
    already the design's share): requests + loaded items × rate / 1000, the items counted per
    payload. None for a run without a cost basis (not collected by a poll cycle)."""
    row = conn.execute(text(ACTUAL_COST), {"run": collection_run_id}).one_or_none()
    if row is None or not row.metered:
        return None
    return row.actual


def settle_ingested_run(conn: Connection, collection_run_id: int) -> Settlement | None:
    """Settle a run once ingestion has loaded it, with its actual cost (see :func:`actual_cost`)."""
    cost = actual_cost(conn, collection_run_id)
    return None if cost is None else settle(conn, collection_run_id, cost)


def history(conn: Connection, design: str | int, after_id: int = 0, limit: int = MAX_HISTORY_PAGE) -> list[LedgerEntry]:
    """One keyset page of the design's ledger, oldest first: the rows after ``after_id``, at most 200."""
    if not 1 <= limit <= MAX_HISTORY_PAGE:
        raise ValueError(f"a page holds 1 to {MAX_HISTORY_PAGE} rows, not {limit}")
    design_key, _ = find_design(conn, design)
    rows = conn.execute(
        text(
            """
            SELECT id, created_at, kind, collection_run_id, allocation_id, amount FROM credit_transactions
             WHERE query_design_id = :design AND id > :after ORDER BY id LIMIT :limit
            """
        ),
        {"design": design_key, "after": after_id, "limit": limit},
    ).all()
    return [LedgerEntry(*row) for row in rows]


TOTALS_OFF_LEDGER = """
SELECT a.id AS allocation_id, a.reserved, a.settled, a.released,
       coalesce(t.reserved, 0) AS ledger_reserved, coalesce(t.settled, 0) AS ledger_settled,
       coalesce(t.released, 0) AS ledger_released
  FROM credit_allocations a
  LEFT JOIN (SELECT allocation_id,
                    sum(amount) FILTER (WHERE kind = :reserve) AS reserved,
                    sum(amount) FILTER (WHERE kind = :settle) AS settled,
                    sum(amount) FILTER (WHERE kind IN (:release, :expire)) AS released
               FROM credit_transactions GROUP BY allocation_id) t ON t.allocation_id = a.id
 WHERE (a.reserved, a.settled, a.released)
       IS DISTINCT FROM (coalesce(t.reserved, 0), coalesce(t.settled, 0), coalesce(t.released, 0))
 ORDER BY a.id
"""


def ledger_violations(conn: Connection, today: date | None = None) -> dict[str, list[dict]]:
    """Designs whose balance today is below zero, designs holding more than they are allocated, and
    allocations whose running totals differ from the sums of their ledger rows (a full scan)."""
    rows = conn.execute(text("SELECT id FROM query_designs ORDER BY id")).scalars().all()
    balances = [balance(conn, design, today) for design in rows]
    off_ledger = conn.execute(text(TOTALS_OFF_LEDGER), _KINDS).mappings().all()
    return {
        "negative_balance": [b.as_json() for b in balances if b.available < 0],
        "held_above_allocated": [b.as_json() for b in balances if b.held > b.allocated],
        "totals_off_ledger": [{k: str(v) for k, v in row.items()} for row in off_ledger],
    }
