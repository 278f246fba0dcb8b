"""Credit assets: the ledger's housekeeping (expiry, failed runs) and its invariants as asset checks."""

from datetime import UTC, datetime

import dagster as dg

from observatory_assets.defs.credits.balances import design_balances
from observatory_assets.defs.credits.ledger import expire, ledger_violations, release_failed_runs
from observatory_assets.lib.dagster import markdown_table
from resources import PostgresResource

CREDITS = "credits"


@dg.asset(group_name=CREDITS, kinds={"postgres"})
def credit_ledger(context: dg.AssetExecutionContext, postgres: PostgresResource) -> dg.MaterializeResult:
    """The credit ledger (`credit_allocations`, `credit_transactions`) brought up to date: holds of
    failed collection runs released, holds older than 24 h expired; the balance of every query design
    today (UTC) as metadata."""
    with postgres.get_engine().begin() as conn:
        released = release_failed_runs(conn)
        expired = expire(conn, datetime.now(UTC))
        balances = design_balances(conn)
    context.log.info(f"released {released} holds of failed runs, expired {expired} holds")
    return dg.MaterializeResult(
        metadata={
            "released_failed_runs": released,
            "expired_reservations": expired,
            "designs": len(balances),
            "balances": dg.MetadataValue.md(markdown_table(balances)),
        }
    )


@dg.multi_asset_check(
    specs=[
        dg.AssetCheckSpec("no_negative_balance", asset=credit_ledger, description="No design's balance is below zero."),
        dg.AssetCheckSpec(
            "held_within_allocated",
            asset=credit_ledger,
            description="No design holds more credits in open reservations than it is allocated today.",
        ),
        dg.AssetCheckSpec(
            "totals_match_ledger",
            asset=credit_ledger,
            description="Every allocation's running totals equal the sums of its ledger rows.",
        ),
    ]
)
def credit_ledger_invariants(postgres: PostgresResource):
    with postgres.get_engine().connect() as conn:
        found = ledger_violations(conn)
    for check, key in (
        ("no_negative_balance", "negative_balance"),
        ("held_within_allocated", "held_above_allocated"),
        ("totals_match_ledger", "totals_off_ledger"),
    ):
        yield dg.AssetCheckResult(
            check_name=check,
            asset_key=credit_ledger.key,
            passed=not found[key],
            metadata={"designs": found[key]},
        )
