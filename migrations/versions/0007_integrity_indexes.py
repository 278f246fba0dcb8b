"""Indexes that let asset checks look at what one clustering run changed, not at every event
(``events.updated_at`` is indexed by 0003 for the trends watermark).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE INDEX events_created ON events (created_at)")
    op.execute("CREATE INDEX event_items_assigned ON event_items (assigned_at)")


def downgrade() -> None:
    op.execute("DROP INDEX event_items_assigned, events_created")
