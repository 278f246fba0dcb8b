"""Event merges: when two open events turn out to tell one story, the younger is folded into the older.

The older event keeps its id (it may already be published or be a trend's evidence), the merge is
recorded here, and the younger event's trend evidence is moved to the older one before the younger
event is removed. ``item_time``/``item_hash`` name the item whose joining made the two centroids
converge: re-clustering from an earlier point (items arriving out of order) replays such merges.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06
"""

from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE event_merges (
            merged_event_id bigint PRIMARY KEY,   -- the younger event, gone since the merge
            into_event_id   bigint NOT NULL REFERENCES events (id) ON DELETE CASCADE,  -- the older, kept
            similarity      real NOT NULL,        -- of the two centroids when they were merged
            item_time       timestamptz NOT NULL, -- the item whose joining made them converge
            item_hash       bytea NOT NULL,
            merged_at       timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX event_merges_into ON event_merges (into_event_id);
        CREATE INDEX event_merges_order ON event_merges (item_time, item_hash);
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE event_merges")
