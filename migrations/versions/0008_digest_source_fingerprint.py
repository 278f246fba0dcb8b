"""``publish_records.source_fingerprint``: a fingerprint of everything a digest was rendered from (the
day's ranked events, their links, the trend moves, the inlined charts and the renderer itself). An
unchanged re-publish compares it and skips without loading and rendering the digest again.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE publish_records ADD COLUMN source_fingerprint text")


def downgrade() -> None:
    op.execute("ALTER TABLE publish_records DROP COLUMN source_fingerprint")
