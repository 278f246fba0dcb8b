"""The one place where polling meets the credits ledger (:mod:`observatory_assets.defs.credits.ledger`).

Polling reserves a design's estimated cost before any of its requests is sent, keyed by the design's
collection run (a shortfall is the hard stop: no request, no run; it is audited and a ``budget.exhausted``
webhook queued once per exhaustion, when the design becomes short, not at every cycle that finds it so), records the run's cost basis once
the requests are answered (every request sent costs its ``per_request`` share whatever the answer;
the items cost ``per_1k_items`` once ingestion loads them and settles the run), and releases the hold
of a run that sent nothing. Sources in no design cost nothing and reserve nothing.
"""

from __future__ import annotations

from decimal import ROUND_CEILING, Decimal

from sqlalchemy import Connection, text

from observatory_assets.defs.credits import ledger
from observatory_assets.lib.audit import record_audit
from observatory_assets.lib.outbox import emit_budget_exhausted


def shortfall(conn: Connection, design_id: int | None, estimate: Decimal) -> Decimal | None:
    """How many credits design ``design_id`` lacks for ``estimate`` (None: it can pay); reserves nothing."""
    needed = ledger.credits(estimate, rounding=ROUND_CEILING)
    if design_id is None or needed <= 0:
        return None
    available = ledger.balance(conn, design_id).available
    return None if available >= needed else needed - max(available, ledger.ZERO)


def reserve_run(conn: Connection, design_id: int | None, run_id: int, estimate: Decimal) -> Decimal | None:
    """Reserve ``estimate`` credits of design ``design_id`` for run ``run_id`` under the ledger's row lock;
    the shortfall if the design cannot cover it (nothing reserved), else None. A free estimate holds
    nothing."""
    if design_id is None or estimate <= 0:
        return None
    outcome = ledger.reserve(conn, design_id, run_id, estimate)
    if isinstance(outcome, ledger.Shortfall):
        return outcome.needed - outcome.available
    conn.execute(  # it can pay: a later shortfall is a new exhaustion
        text(
            "UPDATE query_designs SET budget_exhausted_at = NULL WHERE id = :design AND budget_exhausted_at IS NOT NULL"
        ),
        {"design": design_id},
    )
    return None


def note_shortfall(
    conn: Connection, actor: str, design_id: int, design: str, estimate: Decimal, shortfall: Decimal
) -> bool:
    """Design ``design`` cannot pay ``estimate`` (it lacks ``shortfall``). The first time since it last
    could (a new exhaustion), audit it and queue a ``budget.exhausted`` webhook in the caller's
    transaction, and return True; while it stays short, nothing more is written."""
    newly = conn.execute(
        text(
            "UPDATE query_designs SET budget_exhausted_at = clock_timestamp() "
            "WHERE id = :design AND budget_exhausted_at IS NULL RETURNING id"
        ),
        {"design": design_id},
    ).first()
    if newly is None:
        return False
    details = {"estimate": str(estimate), "shortfall": str(shortfall)}
    record_audit(conn, actor, "credits.shortfall", "query_design", design_id, design, "skipped", details)
    emit_budget_exhausted(conn, design, details)
    return True


def record_cost_basis(conn: Connection, run_id: int, request_cost: Decimal, per_1k_items: dict[str, Decimal]) -> None:
    """The run's requests were answered: they cost ``request_cost``; its items cost ``per_1k_items``
    (by source name) when ingestion loads them and settles the run."""
    ledger.record_cost_basis(conn, run_id, request_cost, per_1k_items)


def settle_run(conn: Connection, run_id: int, request_cost: Decimal) -> None:
    """Settle a run that delivered nothing to ingest at what its requests cost; the rest is released."""
    ledger.record_cost_basis(conn, run_id, request_cost, {})
    ledger.settle(conn, run_id, request_cost)


def release_run(conn: Connection, run_id: int) -> None:
    """Give back the whole hold of a cycle's run that died before its answers were recorded: nothing of it
    is charged, its sources are fetched and charged by the next cycle."""
    ledger.release(conn, run_id)
