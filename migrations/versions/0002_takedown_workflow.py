"""Takedown workflow: requests resolved to items, persisted stages and deadlines; audit rows with target
and outcome.

A takedown request names an item, a URL or an event; ``takedown_items`` holds the
items it resolves to. Its status moves ``pending → withdrawn → removed`` (or
``cancelled``): while a request is pending, withdrawn or removed, its items are
gone from digests, feeds, exports and trend evidence. ``grace_until`` is the
persisted deadline of stage 2, swept by the takedown sensor.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

UPGRADE = """
ALTER TABLE takedown_requests DROP CONSTRAINT takedown_requests_status_check;
UPDATE takedown_requests
   SET status = CASE status WHEN 'open' THEN 'pending' WHEN 'done' THEN 'removed' ELSE 'cancelled' END;
ALTER TABLE takedown_requests
    ALTER COLUMN status SET DEFAULT 'pending',
    ADD CONSTRAINT takedown_requests_status_check
        CHECK (status IN ('pending', 'withdrawn', 'removed', 'cancelled')),
    ADD COLUMN subject_kind  text CHECK (subject_kind IN ('item', 'url', 'event')),
    ADD COLUMN subject       text,
    ADD COLUMN grace_until   timestamptz,
    ADD COLUMN withdrawn_at  timestamptz,
    ADD COLUMN removed_at    timestamptz,
    ADD COLUMN cancelled_at  timestamptz,
    ADD COLUMN cancelled_by  text,
    ADD COLUMN attempts      integer NOT NULL DEFAULT 0,
    ADD COLUMN last_error    text;
CREATE INDEX takedown_requests_due ON takedown_requests (grace_until) WHERE status = 'withdrawn';

CREATE TABLE takedown_items (
    request_id bigint NOT NULL REFERENCES takedown_requests (id) ON DELETE CASCADE,
    item_id    bigint NOT NULL REFERENCES item_keys (item_id),
    PRIMARY KEY (request_id, item_id)
);
CREATE INDEX takedown_items_item ON takedown_items (item_id);
INSERT INTO takedown_items (request_id, item_id)
SELECT id, item_id FROM takedown_requests WHERE item_id IS NOT NULL;

ALTER TABLE audit_log
    ADD COLUMN target  text,
    ADD COLUMN outcome text NOT NULL DEFAULT 'ok';
CREATE INDEX audit_log_action ON audit_log (action, at);
"""

DOWNGRADE = """
DROP INDEX IF EXISTS audit_log_action;
ALTER TABLE audit_log DROP COLUMN outcome, DROP COLUMN target;
DROP TABLE takedown_items;
DROP INDEX IF EXISTS takedown_requests_due;
ALTER TABLE takedown_requests DROP CONSTRAINT takedown_requests_status_check;
UPDATE takedown_requests
   SET status = CASE status WHEN 'pending' THEN 'open' WHEN 'withdrawn' THEN 'open' WHEN 'removed' THEN 'done'
                            ELSE 'rejected' END;
ALTER TABLE takedown_requests
    ALTER COLUMN status SET DEFAULT 'open',
    ADD CONSTRAINT takedown_requests_status_check CHECK (status IN ('open', 'done', 'rejected')),
    DROP COLUMN subject_kind, DROP COLUMN subject, DROP COLUMN grace_until, DROP COLUMN withdrawn_at,
    DROP COLUMN removed_at, DROP COLUMN cancelled_at, DROP COLUMN cancelled_by, DROP COLUMN attempts,
    DROP COLUMN last_error;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
