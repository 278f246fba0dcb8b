"""Catalog state a re-sync keeps, holds booked across allocations, one exhaustion notice per exhaustion.

- ``sources.catalog_url``: the URL the catalog last gave a source. A re-sync compares the catalog's URL
  with it, not with ``url``, so a 301/308's rewrite of ``url`` survives a re-sync of an unchanged catalog.
- ``query_designs.catalog_file``: the catalog file a design came from (NULL: not from the catalog); a
  design that leaves the catalog loses its sources, so it is no longer polled for nor charged.
- ``query_designs.budget_exhausted_at``: since when the design has been short of credits (NULL: it is
  not); the shortfall audit and the ``budget.exhausted`` webhook are written when it becomes short, once.
- ``collection_runs.poll_run_id``: the Dagster run whose cycle created the run (NULL: a cycle outside
  Dagster), so the polling sensor can tell a dead cycle's run from a live one.
- A run's hold is booked across the allocations valid when it was taken (oldest ending first), each part
  settled and released against its own allocation, so an allocation that expires takes only its own
  movements with it: the ledger's uniqueness is per run and allocation.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-07
"""

from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None

UPGRADE = """
ALTER TABLE sources ADD COLUMN catalog_url text;
UPDATE sources SET catalog_url = url WHERE catalog_file IS NOT NULL;
ALTER TABLE query_designs ADD COLUMN catalog_file text, ADD COLUMN budget_exhausted_at timestamptz;
ALTER TABLE collection_runs ADD COLUMN poll_run_id text;

DROP INDEX credit_transactions_reserve;
DROP INDEX credit_transactions_settle;
DROP INDEX credit_transactions_hold_ended;
CREATE UNIQUE INDEX credit_transactions_reserve ON credit_transactions (collection_run_id, allocation_id)
    NULLS NOT DISTINCT WHERE kind = 'reserve';
CREATE UNIQUE INDEX credit_transactions_settle ON credit_transactions (collection_run_id, allocation_id)
    NULLS NOT DISTINCT WHERE kind = 'settle';
CREATE UNIQUE INDEX credit_transactions_hold_ended ON credit_transactions (collection_run_id, allocation_id)
    NULLS NOT DISTINCT WHERE kind IN ('release', 'expire');
"""

# a run whose hold was split over allocations cannot go back to one row per run: the downgrade then fails
DOWNGRADE = """
DROP INDEX credit_transactions_reserve;
DROP INDEX credit_transactions_settle;
DROP INDEX credit_transactions_hold_ended;
CREATE UNIQUE INDEX credit_transactions_reserve ON credit_transactions (collection_run_id) WHERE kind = 'reserve';
CREATE UNIQUE INDEX credit_transactions_settle ON credit_transactions (collection_run_id) WHERE kind = 'settle';
CREATE UNIQUE INDEX credit_transactions_hold_ended ON credit_transactions (collection_run_id)
    WHERE kind IN ('release', 'expire');
ALTER TABLE collection_runs DROP COLUMN poll_run_id;
ALTER TABLE query_designs DROP COLUMN budget_exhausted_at, DROP COLUMN catalog_file;
ALTER TABLE sources DROP COLUMN catalog_url;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
