"""Publishing: one record per (target, digest day), the items each record shows, and the records a
takedown touched.

``publish_records`` becomes the state of one digest day on one target: ``external_id`` is the
target's id of the content (a Ghost post id, a static page key), ``content_hash`` the SHA-256 of
the sanitized HTML last sent (equal hash = skip), ``body_html`` that HTML (the feeds are rebuilt
from it), ``live`` whether the content is visible on the target now (false while a takedown left
nothing to show). Its ``id`` is the feed entry id and, records never being deleted, never reused.
``publish_record_items`` lists the items the record shows, so a takedown finds the records that
contain an item. ``takedown_records`` lists the records a takedown's stage 1 changed, which stage 2
finalizes or a cancel restores.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

UPGRADE = """
ALTER TABLE publish_records DROP CONSTRAINT publish_records_target_content_hash_key;
ALTER TABLE publish_records RENAME COLUMN external_post_id TO external_id;
ALTER TABLE publish_records RENAME CONSTRAINT publish_records_target_external_post_id_key
    TO publish_records_target_external_id_key;
ALTER TABLE publish_records
    ADD COLUMN digest_date date,
    ADD COLUMN body_html   text NOT NULL DEFAULT '',
    ADD COLUMN live        boolean NOT NULL DEFAULT true,
    ADD COLUMN event_count integer NOT NULL DEFAULT 0,
    ADD COLUMN item_count  integer NOT NULL DEFAULT 0,
    ADD COLUMN updated_at  timestamptz NOT NULL DEFAULT now(),
    ADD CONSTRAINT publish_records_target_check CHECK (target IN ('static', 'ghost'));
UPDATE publish_records SET digest_date = (published_at AT TIME ZONE 'UTC')::date;
ALTER TABLE publish_records
    ALTER COLUMN digest_date SET NOT NULL,
    ADD CONSTRAINT publish_records_target_digest_date_key UNIQUE (target, digest_date);

CREATE TABLE publish_record_items (
    record_id bigint NOT NULL REFERENCES publish_records (id),
    item_id   bigint NOT NULL REFERENCES item_keys (item_id),
    PRIMARY KEY (record_id, item_id)
);
CREATE INDEX publish_record_items_item ON publish_record_items (item_id);

CREATE TABLE takedown_records (
    request_id  bigint NOT NULL REFERENCES takedown_requests (id) ON DELETE CASCADE,
    record_id   bigint NOT NULL REFERENCES publish_records (id),
    emptied     boolean,
    restored_at timestamptz,
    PRIMARY KEY (request_id, record_id)
);
CREATE INDEX takedown_records_record ON takedown_records (record_id);

ALTER TABLE takedown_requests ADD COLUMN last_attempt_at timestamptz;
"""

DOWNGRADE = """
ALTER TABLE takedown_requests DROP COLUMN last_attempt_at;
DROP TABLE takedown_records;
DROP TABLE publish_record_items;
ALTER TABLE publish_records
    DROP CONSTRAINT publish_records_target_digest_date_key,
    DROP CONSTRAINT publish_records_target_check,
    DROP COLUMN digest_date, DROP COLUMN body_html, DROP COLUMN live, DROP COLUMN event_count,
    DROP COLUMN item_count, DROP COLUMN updated_at;
ALTER TABLE publish_records RENAME CONSTRAINT publish_records_target_external_id_key
    TO publish_records_target_external_post_id_key;
ALTER TABLE publish_records RENAME COLUMN external_id TO external_post_id;
ALTER TABLE publish_records ADD CONSTRAINT publish_records_target_content_hash_key UNIQUE (target, content_hash);
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
