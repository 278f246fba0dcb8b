"""The embeddings' HNSW index rebuilt as the owner: the application role (no DDL rights) may drop and
build exactly that index.

A collection run that writes a large share of ``item_embeddings`` (a first load, a backfill, a new
embedding space) drops its HNSW index, upserts its vectors and builds the index again in one
transaction, which is about ten times cheaper per vector than inserting into the graph
(``observatory_assets.defs.enrichment.embeddings``). In production the application connects as a
role that owns nothing (docker/create-app-role.sql), so both steps are ``SECURITY DEFINER``
functions owned by the schema's owner, with a fixed ``search_path``, that touch nothing but
``item_embeddings_hnsw``. The index's definition (0001's) lives here, once.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01
"""

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

UPGRADE = """
CREATE FUNCTION drop_item_embeddings_index() RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    DROP INDEX IF EXISTS item_embeddings_hnsw;
END
$$;
CREATE FUNCTION build_item_embeddings_index() RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    CREATE INDEX IF NOT EXISTS item_embeddings_hnsw ON item_embeddings
        USING hnsw (embedding vector_cosine_ops) WITH (m = 8, ef_construction = 32);
END
$$;
REVOKE EXECUTE ON FUNCTION drop_item_embeddings_index() FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION build_item_embeddings_index() FROM PUBLIC;
"""

DOWNGRADE = """
DROP FUNCTION build_item_embeddings_index();
DROP FUNCTION drop_item_embeddings_index();
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
