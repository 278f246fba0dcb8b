"""Trend ledger: trend definitions from files, evidence that is retracted (never deleted), restated snapshots.

``trends`` gains the fields of its YAML definition, an ``active`` flag (a deleted file
deactivates the trend and keeps its history), the time its stored log-odds was
computed for, and a per-trend watermark of the events already matched.
``trend_evidence`` no longer cascades from ``events``: an event that disappears in a
re-clustering retracts its evidence (``retracted_at``) instead of deleting it, and each
row keeps the items it was built on, the event time it applies from, its uncapped
delta and the matched terms. ``trend_snapshots`` keeps the value first written beside
the restated one and the day's biggest movers.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

UPGRADE = """
ALTER TABLE trends
    ADD COLUMN title                text NOT NULL DEFAULT '',
    ADD COLUMN question             text NOT NULL DEFAULT '',
    ADD COLUMN horizon              date,
    ADD COLUMN baseline_probability double precision NOT NULL DEFAULT 0.5
        CHECK (baseline_probability > 0 AND baseline_probability < 1),
    ADD COLUMN active               boolean NOT NULL DEFAULT true,
    ADD COLUMN source_file          text,
    ADD COLUMN definition_sha256    text,
    ADD COLUMN state_at             timestamptz,
    ADD COLUMN matched_through      timestamptz,
    ADD COLUMN created_at           timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN deactivated_at       timestamptz;

ALTER TABLE trend_evidence
    DROP CONSTRAINT trend_evidence_event_id_fkey,
    ADD COLUMN event_at          timestamptz,
    ADD COLUMN raw_delta         double precision NOT NULL DEFAULT 0,
    ADD COLUMN matched_terms     text[] NOT NULL DEFAULT '{}',
    ADD COLUMN item_ids          bigint[] NOT NULL DEFAULT '{}',
    ADD COLUMN independent_sources integer NOT NULL DEFAULT 0,
    ADD COLUMN copies_collapsed  integer NOT NULL DEFAULT 0,
    ADD COLUMN closest_event_id  bigint,
    ADD COLUMN updated_at        timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN retracted_at      timestamptz,
    ADD COLUMN retraction_reason text;
UPDATE trend_evidence SET event_at = observed_at;
ALTER TABLE trend_evidence ALTER COLUMN event_at SET NOT NULL;
CREATE INDEX trend_evidence_ledger ON trend_evidence (trend_id, event_at) WHERE retracted_at IS NULL;
CREATE INDEX trend_evidence_event ON trend_evidence (event_id);
CREATE INDEX trend_evidence_items ON trend_evidence USING gin (item_ids) WHERE retracted_at IS NULL;
CREATE INDEX events_updated ON events (updated_at);

ALTER TABLE trend_snapshots
    ADD COLUMN first_log_odds    double precision,
    ADD COLUMN first_probability double precision,
    ADD COLUMN movers            jsonb NOT NULL DEFAULT '[]',
    ADD COLUMN restated_at       timestamptz;
UPDATE trend_snapshots SET first_log_odds = log_odds, first_probability = probability;
ALTER TABLE trend_snapshots
    ALTER COLUMN first_log_odds SET NOT NULL,
    ALTER COLUMN first_probability SET NOT NULL;
-- A row written without its first value (any writer but the trend code) starts with its own value as first.
CREATE FUNCTION trend_snapshots_first_written() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.first_log_odds := coalesce(NEW.first_log_odds, NEW.log_odds);
    NEW.first_probability := coalesce(NEW.first_probability, NEW.probability);
    RETURN NEW;
END
$$;
CREATE TRIGGER trend_snapshots_first_written BEFORE INSERT ON trend_snapshots
    FOR EACH ROW EXECUTE FUNCTION trend_snapshots_first_written();
"""

DOWNGRADE = """
DROP TRIGGER IF EXISTS trend_snapshots_first_written ON trend_snapshots;
DROP FUNCTION IF EXISTS trend_snapshots_first_written();
ALTER TABLE trend_snapshots
    DROP COLUMN first_log_odds, DROP COLUMN first_probability, DROP COLUMN movers, DROP COLUMN restated_at;
DROP INDEX IF EXISTS events_updated;
DROP INDEX IF EXISTS trend_evidence_items;
DROP INDEX IF EXISTS trend_evidence_event;
DROP INDEX IF EXISTS trend_evidence_ledger;
DELETE FROM trend_evidence e WHERE NOT EXISTS (SELECT 1 FROM events v WHERE v.id = e.event_id);
ALTER TABLE trend_evidence
    DROP COLUMN event_at, DROP COLUMN raw_delta, DROP COLUMN matched_terms, DROP COLUMN item_ids,
    DROP COLUMN independent_sources, DROP COLUMN copies_collapsed, DROP COLUMN closest_event_id, DROP COLUMN updated_at, DROP COLUMN retracted_at,
    DROP COLUMN retraction_reason,
    ADD CONSTRAINT trend_evidence_event_id_fkey FOREIGN KEY (event_id) REFERENCES events (id) ON DELETE CASCADE;
ALTER TABLE trends
    DROP COLUMN title, DROP COLUMN question, DROP COLUMN horizon, DROP COLUMN baseline_probability,
    DROP COLUMN active, DROP COLUMN source_file, DROP COLUMN definition_sha256, DROP COLUMN state_at,
    DROP COLUMN matched_through, DROP COLUMN created_at, DROP COLUMN deactivated_at;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
