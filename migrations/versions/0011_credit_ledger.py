"""Credits: allocations per query design and an append-only ledger keyed by collection run.

``credit_allocations`` holds the credits a query design may spend in a validity window (a catalog
budget, synced idempotently, or a top-up from ``observatory credits allocate``).
``credit_transactions`` is the ledger, in the manner of two-phase transfers: a ``reserve`` holds an
estimate before a poll cycle sends a request; the hold then ends once, by a ``release`` (written
when the run is settled with its actual cost, or when it failed) or an ``expire`` (a hold older than
24 h). Rows are never updated or deleted (a trigger refuses it); each allocation carries the running
totals of its rows (kept by a trigger), so a balance does not read the whole history. ``collection_runs.cost_basis`` is
what the collector tells the ledger about a run's cost: the credits its requests cost and the rate
per 1,000 loaded items of each payload's source.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06
"""

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

UPGRADE = """
CREATE TABLE credit_allocations (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    query_design_id bigint NOT NULL REFERENCES query_designs (id),
    origin          text NOT NULL CHECK (origin IN ('catalog', 'manual')),
    amount          numeric(12, 2) NOT NULL CHECK (amount >= 0),
    valid_from      date NOT NULL,
    valid_until     date NOT NULL,
    -- running totals of the ledger rows against this allocation, kept by a trigger on the ledger
    reserved        numeric(12, 2) NOT NULL DEFAULT 0,
    settled         numeric(12, 2) NOT NULL DEFAULT 0,
    released        numeric(12, 2) NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CHECK (valid_until >= valid_from)
);
-- a design's catalog budget is one allocation, rewritten in place when the catalog changes it
CREATE UNIQUE INDEX credit_allocations_catalog ON credit_allocations (query_design_id) WHERE origin = 'catalog';
CREATE INDEX credit_allocations_design ON credit_allocations (query_design_id, valid_from, valid_until);

CREATE TABLE credit_transactions (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    query_design_id   bigint NOT NULL REFERENCES query_designs (id),
    allocation_id     bigint REFERENCES credit_allocations (id),
    collection_run_id bigint NOT NULL REFERENCES collection_runs (id),
    kind              text NOT NULL CHECK (kind IN ('reserve', 'settle', 'release', 'expire')),
    amount            numeric(12, 2) NOT NULL CHECK (amount >= 0),
    created_at        timestamptz NOT NULL DEFAULT clock_timestamp()
);
-- one reservation and one settlement per run, and a hold ends once (released or expired)
CREATE UNIQUE INDEX credit_transactions_reserve ON credit_transactions (collection_run_id) WHERE kind = 'reserve';
CREATE UNIQUE INDEX credit_transactions_settle ON credit_transactions (collection_run_id) WHERE kind = 'settle';
CREATE UNIQUE INDEX credit_transactions_hold_ended ON credit_transactions (collection_run_id)
    WHERE kind IN ('release', 'expire');
CREATE INDEX credit_transactions_allocation ON credit_transactions (allocation_id, kind);
CREATE INDEX credit_transactions_design ON credit_transactions (query_design_id, id);

CREATE FUNCTION credit_transactions_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'credit_transactions is append-only';
END
$$;
CREATE TRIGGER credit_transactions_append_only BEFORE UPDATE OR DELETE ON credit_transactions
    FOR EACH ROW EXECUTE FUNCTION credit_transactions_append_only();

-- the balance reads these totals, not the whole history: kept in the transaction that writes the row
CREATE FUNCTION credit_allocations_add_movement() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE credit_allocations
       SET reserved = reserved + CASE WHEN NEW.kind = 'reserve' THEN NEW.amount ELSE 0 END,
           settled = settled + CASE WHEN NEW.kind = 'settle' THEN NEW.amount ELSE 0 END,
           released = released + CASE WHEN NEW.kind IN ('release', 'expire') THEN NEW.amount ELSE 0 END
     WHERE id = NEW.allocation_id;
    RETURN NULL;
END
$$;
CREATE TRIGGER credit_allocations_add_movement AFTER INSERT ON credit_transactions
    FOR EACH ROW WHEN (NEW.allocation_id IS NOT NULL) EXECUTE FUNCTION credit_allocations_add_movement();

ALTER TABLE collection_runs ADD COLUMN cost_basis jsonb;
"""

DOWNGRADE = """
ALTER TABLE collection_runs DROP COLUMN cost_basis;
DROP TABLE credit_transactions;
DROP FUNCTION credit_allocations_add_movement();
DROP FUNCTION credit_transactions_append_only();
DROP TABLE credit_allocations;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
