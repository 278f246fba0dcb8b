"""Platform, arena, content type, author handle and engagement as columns of ``raw_items``.

An item says which platform it came from (``rss``, ``reddit``, ``bluesky``, ``gdelt``, ``telegram``,
``youtube``, or what a file export names), the arena it is counted in (the source's ``config.arena``,
else its format, as the export filters read it), its content type (``article`` for feeds, ``post``,
``video``…), the author's handle on that platform, and the engagement counts the platform reports
(``views``, ``likes``, ``shares``, ``comments``). These were only inside ``raw_metadata``; the backfill
reads them from there with the same rules the loader applies to new rows (the first of a field's
aliases holding a whole non-negative number, as a number or digit text), and from the item's source.
``raw_metadata`` itself is left as it is, so the downgrade drops the columns and loses nothing of the
items. A source's type may now be an arena (``reddit``, ``bluesky``, ``gdelt``, ``telegram``,
``youtube``); the downgrade makes those ``api`` sources, the type the first schema had for them.

``api_credentials`` is the pool of API keys per platform (YouTube's today): each key Fernet-encrypted
with ``OBSERVATORY_SECRET_KEY`` (as webhook secrets are), labelled by a fingerprint, with its quota
state: the units it spent on its quota day and, once the platform said the quota is spent, the moment
it may be used again (the quota day's reset).

``platform`` and ``arena`` are btree-indexed (created on the partitioned parent, so every monthly
partition, present and future, gets its own index). The backfill runs one partition at a time.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07
"""

from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

#: Metadata paths each count is read from, first holding one wins (as the exports read them before).
COUNT_PATHS = {
    "views": ("views", "view_count", "viewCount", "stats,playCount"),
    "likes": ("likes", "like_count", "likeCount", "favorite_count", "stats,diggCount"),
    "shares": ("shares", "share_count", "repostCount", "retweet_count", "stats,shareCount"),
    "comments": ("comments", "comment_count", "replyCount", "num_comments", "reply_count", "stats,commentCount"),
}
HANDLE_KEYS = ("author_handle", "handle", "screen_name")


def _count(paths: tuple[str, ...]) -> str:
    picks = []
    for path in paths:
        value = f"r.raw_metadata #> '{{{path}}}'"
        picks.append(
            f"CASE jsonb_typeof({value}) "
            f"WHEN 'number' THEN CASE WHEN ({value})::numeric BETWEEN 0 AND 9e18 THEN round(({value})::numeric)::bigint END "
            f"WHEN 'string' THEN CASE WHEN {value} #>> '{{}}' ~ '^[0-9]{{1,18}}$' THEN ({value} #>> '{{}}')::bigint END END"
        )
    return f"coalesce({', '.join(picks)})"


ARENA_TYPES = "'reddit', 'bluesky', 'gdelt', 'telegram', 'youtube'"
OLD_TYPES = "'rss', 'atom', 'jsonl', 'csv', 'ndjson', 'api', 'other'"

ADD_COLUMNS = f"""
ALTER TABLE sources DROP CONSTRAINT sources_type_check,
    ADD CONSTRAINT sources_type_check CHECK (type IN ({OLD_TYPES}, {ARENA_TYPES}));
ALTER TABLE raw_items
    ADD COLUMN platform      text,
    ADD COLUMN arena         text,
    ADD COLUMN content_type  text,
    ADD COLUMN author_handle text,
    ADD COLUMN views         bigint CHECK (views >= 0),
    ADD COLUMN likes         bigint CHECK (likes >= 0),
    ADD COLUMN shares        bigint CHECK (shares >= 0),
    ADD COLUMN comments      bigint CHECK (comments >= 0)
"""

PARTITIONS = """
SELECT c.oid::regclass::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
 WHERE i.inhparent = 'raw_items'::regclass ORDER BY 1
"""


def _backfill(partition: str) -> str:
    handle = ", ".join(f"nullif(btrim(r.raw_metadata ->> '{key}'), '')" for key in HANDLE_KEYS)
    counts = ",\n           ".join(f"{column} = {_count(paths)}" for column, paths in COUNT_PATHS.items())
    return f"""
    UPDATE {partition} AS r
       SET platform = coalesce(lower(nullif(btrim(r.raw_metadata ->> 'platform'), '')), s.type),
           arena = coalesce(s.config ->> 'arena', s.type),
           content_type = coalesce(lower(nullif(btrim(r.raw_metadata ->> 'content_type'), '')),
                                   CASE WHEN s.type IN ('rss', 'atom') THEN 'article' ELSE 'post' END),
           author_handle = coalesce({handle}),
           {counts}
      FROM sources s
     WHERE s.id = r.source_id
    """


CREDENTIALS = """
CREATE TABLE api_credentials (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    platform       text NOT NULL,
    label          text NOT NULL,                 -- a fingerprint of the key, never the key
    secret         bytea NOT NULL,                -- Fernet token of the key
    quota_day      date,                          -- the platform's quota day units_used counts
    units_used     bigint NOT NULL DEFAULT 0 CHECK (units_used >= 0),
    resting_until  timestamptz,                   -- quota spent: not used before this moment
    last_used_at   timestamptz,
    created_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (platform, label)
)
"""

INDEXES = """
CREATE INDEX raw_items_platform ON raw_items (platform);
CREATE INDEX raw_items_arena ON raw_items (arena)
"""

DOWNGRADE = f"""
DROP TABLE api_credentials;
UPDATE sources SET type = 'api' WHERE type IN ({ARENA_TYPES});
ALTER TABLE sources DROP CONSTRAINT sources_type_check,
    ADD CONSTRAINT sources_type_check CHECK (type IN ({OLD_TYPES}));
DROP INDEX raw_items_arena;
DROP INDEX raw_items_platform;
ALTER TABLE raw_items
    DROP COLUMN comments,
    DROP COLUMN shares,
    DROP COLUMN likes,
    DROP COLUMN views,
    DROP COLUMN author_handle,
    DROP COLUMN content_type,
    DROP COLUMN arena,
    DROP COLUMN platform
"""


def upgrade() -> None:
    op.execute(ADD_COLUMNS)
    for (partition,) in op.get_bind().exec_driver_sql(PARTITIONS).all():
        op.execute(_backfill(partition))
    op.execute(INDEXES)
    op.execute(CREDENTIALS)


def downgrade() -> None:
    op.execute(DOWNGRADE)
