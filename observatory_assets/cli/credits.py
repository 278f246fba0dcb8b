"""``observatory credits allocate | balance | history``: a query design's credits, read from the ledger."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta

import click

from observatory_assets.cli.context import UTC_DAY, Observatory, json_option, limit_option, pass_observatory
from observatory_assets.defs.collection.catalog import design_states
from observatory_assets.defs.credits.ledger import MAX_HISTORY_PAGE, allocate, balance, find_design, history

#: How long a top-up stays valid when ``--until`` is not given.
DEFAULT_VALIDITY = timedelta(days=365)
_BALANCE_FIELDS = ("allocated", "reserved", "settled", "released", "available", "held")


@click.group("credits")
def credits() -> None:
    """Query designs' credit allocations, balances and ledger."""


# "-5" is the amount (refused by the ledger in one line), not an unknown option
@credits.command("allocate", context_settings={"ignore_unknown_options": True})
@click.argument("design")
@click.argument("amount")
@click.option("--from", "valid_from", type=UTC_DAY, help="first valid UTC day (default today)")
@click.option("--until", "valid_until", type=UTC_DAY, help="last valid UTC day (default a year on)")
@pass_observatory
def allocate_command(
    obs: Observatory, design: str, amount: str, valid_from: date | None, valid_until: date | None
) -> int:
    """Give a query design credits for a validity window.

    DESIGN is the design's name or id, AMOUNT a non-negative number of credits."""
    valid_from = valid_from or datetime.now(UTC).date()
    valid_until = valid_until or valid_from + DEFAULT_VALIDITY
    with obs.engine.begin() as conn:
        design_id, name = find_design(conn, design)
        allocation = allocate(conn, design_id, amount, valid_from, valid_until)
        now = balance(conn, design_id)
    click.echo(f"allocation {allocation}: {amount} credits to {name}, valid {valid_from} to {valid_until}; "
               f"available today {now.available}")  # fmt: skip
    return 0


@credits.command("balance")
@click.argument("design", required=False)
@json_option('{"design", "allocated", "reserved", "settled", ...} (a list without DESIGN)')
@pass_observatory
def balance_command(obs: Observatory, design: str | None, as_json: bool) -> int:
    """A design's balance today (UTC), or every design's."""
    with obs.engine.connect() as conn:
        names = [design] if design else [d["name"] for d in design_states(conn)]
        balances = [balance(conn, name) for name in names]
    if as_json:
        shaped = [b.as_json() for b in balances]
        click.echo(json.dumps(shaped[0] if design else shaped))
        return 0
    click.echo(f"{'design':32} " + " ".join(f"{field:>10}" for field in _BALANCE_FIELDS))
    for b in balances:
        click.echo(f"{b.design:32} " + " ".join(f"{getattr(b, field):>10}" for field in _BALANCE_FIELDS))
    return 0


@credits.command("history")
@click.argument("design")
@click.option("--after", type=int, default=0, help="show the rows after this ledger id (the next page)")
@limit_option(MAX_HISTORY_PAGE, f"rows per page (at most {MAX_HISTORY_PAGE})")
@json_option('{"design", "entries": [...], "next_after"}')
@pass_observatory
def history_command(obs: Observatory, design: str, after: int, limit: int, as_json: bool) -> int:
    """A design's ledger, oldest first, in keyset pages."""
    with obs.engine.connect() as conn:
        entries = history(conn, design, after_id=after, limit=limit)
    next_after = entries[-1].id if len(entries) == limit else None
    if as_json:
        click.echo(json.dumps({"design": design, "entries": [e.as_json() for e in entries], "next_after": next_after}))
        return 0
    for e in entries:
        click.echo(f"{e.id:>8}  {e.created_at:%Y-%m-%d %H:%M:%S}  {e.kind:8} run {e.collection_run_id:<8} "
                   f"{e.amount:>10}")  # fmt: skip
    if next_after is not None:
        click.echo(f"more: observatory credits history {design} --after {next_after}")
    return 0


COMMANDS = (credits,)
