"""Exports by kind: items, the actor network, and daily volume statistics.

* ``exports.kind`` — what a file holds: ``items`` (the content export), ``network`` (the GEXF actor
  network) or ``volumes`` (``volume_stats`` rows). A request writes one file per (kind, format), so the
  items and the volumes of one Dagster run are both CSV without replacing each other.

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-07
"""

from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None

UPGRADE = """
ALTER TABLE exports ADD COLUMN kind text NOT NULL DEFAULT 'items' CHECK (kind IN ('items', 'network', 'volumes'));
UPDATE exports SET kind = 'network' WHERE format = 'gexf';
ALTER TABLE exports DROP CONSTRAINT exports_request_id_format_key;
ALTER TABLE exports ADD CONSTRAINT exports_request_id_kind_format_key UNIQUE (request_id, kind, format);
"""

# Volume exports have no place in the older table (their request may share its id and format with an
# items export): their rows go, their files stay in object storage.
DOWNGRADE = """
DELETE FROM exports WHERE kind = 'volumes';
ALTER TABLE exports DROP CONSTRAINT exports_request_id_kind_format_key;
ALTER TABLE exports ADD CONSTRAINT exports_request_id_format_key UNIQUE (request_id, format);
ALTER TABLE exports DROP COLUMN kind;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
