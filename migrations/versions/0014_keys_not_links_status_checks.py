"""Static digest records keep their object key, not an expiring link; every status column has a CHECK.

- ``publish_records.url`` held, for the static target, a pre-signed S3 link that expired an hour after
  publishing. The page's object key is its ``external_id`` and a link is signed whenever one is read,
  so the stored links are cleared (Ghost posts keep their permanent public URL).
- ``raw_items.processing_status`` was the one status column without a CHECK constraint; it gets one
  listing the values of ``observatory_assets.lib.statuses.ProcessingStatus``.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06
"""

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("UPDATE publish_records SET url = NULL WHERE target = 'static'")
    op.execute(
        "ALTER TABLE raw_items ADD CONSTRAINT raw_items_processing_status_check "
        "CHECK (processing_status IN ('loaded', 'featurized'))"
    )


def downgrade() -> None:
    op.execute("ALTER TABLE raw_items DROP CONSTRAINT raw_items_processing_status_check")
