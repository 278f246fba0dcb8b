"""Every query design's credit balance at once: what the credit housekeeping shows."""

from __future__ import annotations

from datetime import date

from sqlalchemy import Connection, text

from observatory_assets.defs.credits.ledger import balance


def design_balances(conn: Connection, today: date | None = None) -> list[dict]:
    """The balance (as JSON) of every query design over the allocations valid ``today`` (default:
    today in UTC), designs in name order."""
    designs = conn.execute(text("SELECT id FROM query_designs ORDER BY name")).scalars().all()
    return [balance(conn, design, today).as_json() for design in designs]
