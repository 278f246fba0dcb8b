"""Credit assets: the ledger's housekeeping (expiry, failed runs) and its invariants as asset checks."""

from datetime import UTC, datetime

import dagster as dg
from sqlalchemy import text

from observatory_assets.defs.credits.ledger import balance, expire, ledger_violations, release_failed_runs
from observatory_assets.lib.dagster import markdown_table, utc_schedule
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
        designs = conn.execute(text("SELECT id FROM query_designs ORDER BY name")).scalars().all()
        balances = [balance(conn, design).as_json() for design in designs]
    context.log.info(f"released {released} holds of failed runs, expired {expired} holds")
    return dg.MaterializeResult(
        metadata={
            "released_failed_runs": dg.MetadataValue.int(released),
            "expired_reservations": dg.MetadataValue.int(expired),
            "designs": dg.MetadataValue.int(len(balances)),
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
            metadata={"designs": dg.MetadataValue.json(found[key])},
        )


credit_ledger_job = dg.define_asset_job(
    "credit_housekeeping",
    selection=dg.AssetSelection.assets(credit_ledger),
    description="Release the holds of failed runs, expire holds older than 24 h, check the balances.",
    executor_def=dg.in_process_executor,
)
credit_housekeeping_schedule = utc_schedule(
    credit_ledger_job, "*/15 * * * *", "credit_housekeeping", "Every 15 minutes: the credit ledger's housekeeping."
)

defs = dg.Definitions(
    assets=[credit_ledger],
    asset_checks=[credit_ledger_invariants],
    jobs=[credit_ledger_job],
    schedules=[credit_housekeeping_schedule],
)
