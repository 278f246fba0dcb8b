"""Takedowns by URL look items up through an index on their canonical URL.

``raw_items.url`` holds the URL as ingestion canonicalized it, and a takedown request's URL is
canonicalized the same way, so an equality lookup finds every item of that address. A hash index
(built per monthly partition, and on each partition created later) has no key-size limit, so a
URL of any length can still be loaded.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06
"""

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE INDEX raw_items_url ON raw_items USING hash (url) WHERE url IS NOT NULL")


def downgrade() -> None:
    op.execute("DROP INDEX raw_items_url")
