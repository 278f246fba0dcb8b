"""The one place where polling meets the credits ledger (``observatory_assets.defs.credits``).

Polling reserves a design's estimated cost before any of its requests is sent, keyed by the design's
collection run, and hands the run's cost basis on once the requests are answered. The ledger itself
(allocations, reserve/settle/release/expire, balances) belongs to the credits domain; until that domain
is merged these calls reserve nothing, so every design is funded.
"""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import Connection


def reserve_run(conn: Connection, design_id: int | None, run_id: int, estimate: Decimal) -> Decimal | None:
    """Reserve ``estimate`` credits of design ``design_id`` for run ``run_id``; the shortfall if the
    design's available balance is below the estimate (then nothing is reserved), else None. Sources in
    no design cost nothing."""
    return None


def shortfall(conn: Connection, design_id: int | None, estimate: Decimal) -> Decimal | None:
    """How many credits design ``design_id`` lacks for ``estimate`` (None: it can pay); reserves nothing."""
    return None


def record_request_cost(conn: Connection, run_id: int, request_cost: Decimal) -> None:
    """The run's requests were answered and cost ``request_cost``; its items are charged when loaded."""


def settle_run(conn: Connection, run_id: int, actual: Decimal) -> None:
    """Settle the run at ``actual`` credits; the rest of its reservation is released."""


def release_run(conn: Connection, run_id: int) -> None:
    """Release the run's whole reservation (it sent no request)."""
