"""Trend evidence follows events by transaction id, not by clock: no clustering run can slip under it.

Every write of an ``events`` row stamps ``changed_by`` with the writing transaction's id
(``pg_current_xact_id()``, a trigger, so every writer does it). The evidence run records in
``trends.matched_through`` the oldest transaction still running when it read the events
(``pg_snapshot_xmin``): every transaction below it had finished, so its changes were seen. The next
run re-reads the events changed by that transaction or any later one, however long a clustering
run waited for its lock before it committed. ``matched_through`` was a timestamp watermark (with a
fixed overlap that a queued clustering run could outlast): it becomes that transaction id, empty,
so each trend is matched against all events once more (re-matching is idempotent).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06
"""

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

UPGRADE = """
ALTER TABLE events ADD COLUMN changed_by xid8 NOT NULL DEFAULT pg_current_xact_id();
CREATE FUNCTION events_stamp_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.changed_by := pg_current_xact_id();
    RETURN NEW;
END
$$;
CREATE TRIGGER events_stamp_change BEFORE INSERT OR UPDATE ON events
    FOR EACH ROW EXECUTE FUNCTION events_stamp_change();
CREATE INDEX events_changed_by ON events (changed_by);
ALTER TABLE trends ALTER COLUMN matched_through TYPE xid8 USING NULL;
"""

DOWNGRADE = """
ALTER TABLE trends ALTER COLUMN matched_through TYPE timestamptz USING NULL;
DROP INDEX IF EXISTS events_changed_by;
DROP TRIGGER IF EXISTS events_stamp_change ON events;
DROP FUNCTION IF EXISTS events_stamp_change();
ALTER TABLE events DROP COLUMN changed_by;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
