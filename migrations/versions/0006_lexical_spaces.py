"""Archive-learned document frequencies for the default (lexical) embedder.

``lexical_run_frequencies`` holds what each collection run adds to the archive's
document frequencies (rewritten when the run is embedded again, so the sum over
runs is always the archive's). ``lexical_spaces`` holds frozen snapshots of that
sum: an embedding space. Vectors name their space in ``item_embeddings.embedder``
(``lexical-v2-s<id>``), so vectors of two snapshots never mix.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

UPGRADE = """
CREATE TABLE lexical_run_frequencies (
    collection_run_id bigint PRIMARY KEY REFERENCES collection_runs (id) ON DELETE CASCADE,
    documents         integer NOT NULL,
    -- little-endian int32 pairs (bucket, documents containing a feature of that bucket), bucket ascending
    frequencies       bytea NOT NULL,
    counted_at        timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE lexical_spaces (
    id                   integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    documents            bigint NOT NULL,
    -- little-endian int32 per bucket: the archive's document frequencies when the snapshot was taken
    document_frequencies bytea NOT NULL,
    mean                 bytea NOT NULL,  -- little-endian float32 per dimension: removed from every vector
    join_threshold       real NOT NULL,
    created_at           timestamptz NOT NULL DEFAULT now()
);
"""

DOWNGRADE = """
DROP TABLE lexical_spaces;
DROP TABLE lexical_run_frequencies;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
