"""Sentiment per item (``item_features``) and its balance per event.

``raw_items`` gains the item's sentiment: a score in [−1, 1], a label (negative / neutral / positive,
btree-indexed for ``--sentiment`` filters), the method and version that produced them, and the reason
an item has none (an unsupported language). The columns are nullable, so adding them rewrites nothing.
``event_sentiment`` is the balance of each event's items: their mean score and label counts.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06
"""

from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

UPGRADE = """
ALTER TABLE raw_items
    ADD COLUMN sentiment_score  real CHECK (sentiment_score BETWEEN -1 AND 1),
    ADD COLUMN sentiment_label  text CHECK (sentiment_label IN ('negative', 'neutral', 'positive')),
    ADD COLUMN sentiment_method text,
    ADD COLUMN sentiment_reason text;
CREATE INDEX raw_items_sentiment_label ON raw_items (sentiment_label);

CREATE VIEW event_sentiment AS
SELECT ei.event_id,
       avg(r.sentiment_score)::real                                AS mean_score,
       count(*) FILTER (WHERE r.sentiment_label = 'negative')      AS negative,
       count(*) FILTER (WHERE r.sentiment_label = 'neutral')       AS neutral,
       count(*) FILTER (WHERE r.sentiment_label = 'positive')      AS positive,
       count(*) FILTER (WHERE r.sentiment_label IS NULL)           AS unscored
  FROM event_items ei
  JOIN raw_items r ON r.id = ei.item_id
 GROUP BY ei.event_id;
"""

DOWNGRADE = """
DROP VIEW event_sentiment;
DROP INDEX raw_items_sentiment_label;
ALTER TABLE raw_items
    DROP COLUMN sentiment_reason,
    DROP COLUMN sentiment_method,
    DROP COLUMN sentiment_label,
    DROP COLUMN sentiment_score;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
