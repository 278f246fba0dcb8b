"""``observatory credits allocate | balance | history``: a query design's credits, read from the ledger."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import text

from observatory_assets.cli.runner import engine_and_store
from observatory_assets.defs.credits.ledger import MAX_HISTORY_PAGE, allocate, balance, find_design, history

#: How long a top-up stays valid when ``--until`` is not given.
DEFAULT_VALIDITY = timedelta(days=365)
_BALANCE_FIELDS = ("allocated", "reserved", "settled", "released", "available", "held")


def _day(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {value!r}") from None


def cmd_allocate(args: argparse.Namespace) -> int:
    engine, _ = engine_and_store()
    valid_from = args.valid_from or datetime.now(UTC).date()
    valid_until = args.valid_until or valid_from + DEFAULT_VALIDITY
    with engine.begin() as conn:
        design, name = find_design(conn, args.design)
        allocation = allocate(conn, design, args.amount, valid_from, valid_until)
        now = balance(conn, design)
    print(f"allocation {allocation}: {args.amount} credits to {name}, valid {valid_from} to {valid_until}; "
          f"available today {now.available}")  # fmt: skip
    return 0


def cmd_balance(args: argparse.Namespace) -> int:
    engine, _ = engine_and_store()
    with engine.connect() as conn:
        every = conn.execute(text("SELECT name FROM query_designs ORDER BY name")).scalars().all()
        balances = [balance(conn, name) for name in ([args.design] if args.design else every)]
    if args.json:
        shaped = [b.as_json() for b in balances]
        print(json.dumps(shaped[0] if args.design else shaped))
        return 0
    print(f"{'design':32} " + " ".join(f"{field:>10}" for field in _BALANCE_FIELDS))
    for b in balances:
        print(f"{b.design:32} " + " ".join(f"{getattr(b, field):>10}" for field in _BALANCE_FIELDS))
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    engine, _ = engine_and_store()
    with engine.connect() as conn:
        entries = history(conn, args.design, after_id=args.after, limit=args.limit)
    next_after = entries[-1].id if len(entries) == args.limit else None
    if args.json:
        print(json.dumps({"design": args.design, "entries": [e.as_json() for e in entries], "next_after": next_after}))
        return 0
    for e in entries:
        print(f"{e.id:>8}  {e.created_at:%Y-%m-%d %H:%M:%S}  {e.kind:8} run {e.collection_run_id:<8} {e.amount:>10}")
    if next_after is not None:
        print(f"more: observatory credits history {args.design} --after {next_after}")
    return 0


def register_commands(subparsers) -> None:
    """``observatory credits …``."""
    credits = subparsers.add_parser("credits", help="query designs' credit allocations, balances and ledger")
    sub = credits.add_subparsers(dest="credits_command", required=True)
    top_up = sub.add_parser("allocate", help="give a query design credits for a validity window")
    top_up.add_argument("design")
    top_up.add_argument("amount", help="credits (a non-negative number)")
    top_up.add_argument("--from", dest="valid_from", type=_day, help="first valid UTC day (default today)")
    top_up.add_argument("--until", dest="valid_until", type=_day, help="last valid UTC day (default a year on)")
    top_up.set_defaults(func=cmd_allocate)
    show = sub.add_parser("balance", help="a design's balance today (UTC), or every design's")
    show.add_argument("design", nargs="?")
    show.add_argument("--json", action="store_true", help='{"design", "allocated", "reserved", "settled", ...}')
    show.set_defaults(func=cmd_balance)
    ledger = sub.add_parser("history", help="a design's ledger, oldest first, in keyset pages")
    ledger.add_argument("design")
    ledger.add_argument("--after", type=int, default=0, help="show the rows after this ledger id (the next page)")
    ledger.add_argument(
        "--limit", type=int, default=MAX_HISTORY_PAGE, help=f"rows per page (at most {MAX_HISTORY_PAGE})"
    )
    ledger.add_argument("--json", action="store_true", help='{"design", "entries": [...], "next_after"}')
    ledger.set_defaults(func=cmd_history)
