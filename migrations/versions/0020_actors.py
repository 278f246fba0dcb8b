"""Actors: who said it, across platforms; authors pseudonymised at rest; daily volume statistics.

* ``actors`` — a person, organisation, media outlet or other, with a public-figure flag (a public
  figure's name and handle are kept in clear on their items; everybody else's are not stored).
  ``fingerprint`` is a hash of the actor's catalog entry: a sync relinks only the actors it changed.
* ``actor_aliases`` — other names the actor goes by (matched against an item's author, and as
  mentions in its text).
* ``actor_platform_presences`` — the actor's account on a platform: a handle or channel id, unique per
  platform (case-insensitive), and where it lives.
* ``actor_lists`` / ``actor_list_members`` — named groups a query design can follow
  (``query_design_actor_lists``).
* ``item_actors`` — which items an actor wrote (``role = 'author'``, linked by platform presence first,
  then by name or alias in the author field) or is mentioned in (``role = 'mention'``), and how.
* ``raw_items.author_pseudonym`` — a keyed HMAC-SHA256 of platform and handle (the key lives in settings,
  never with the data): the author's identity for analysis without the author's name. Authors stored in
  clear before this revision are pseudonymised by it (their names and handles removed), with the key of
  ``OBSERVATORY_PSEUDONYM_KEY`` (the embedded demo's generated one); the downgrade cannot bring them back.
* ``volume_stats`` — daily item counts per query design along one dimension (platform, arena, source,
  language, term, sentiment, actor) at a time.
* ``actor_network_nodes`` — the latest actor network's nodes (actors and pseudonymous authors) with
  degree, weighted degree, betweenness and Louvain community.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-07
"""

import json

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None

UPGRADE = """
CREATE TABLE actors (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name          text NOT NULL UNIQUE,
    kind          text NOT NULL CHECK (kind IN ('person', 'organisation', 'media', 'other')),
    public_figure boolean NOT NULL DEFAULT false,
    description   text,
    catalog_file  text,
    fingerprint   text NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE actor_aliases (
    actor_id bigint NOT NULL REFERENCES actors (id) ON DELETE CASCADE,
    alias    text NOT NULL,
    PRIMARY KEY (actor_id, alias)
);
CREATE INDEX actor_aliases_lower ON actor_aliases (lower(alias));

CREATE TABLE actor_platform_presences (
    id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    actor_id bigint NOT NULL REFERENCES actors (id) ON DELETE CASCADE,
    platform text NOT NULL,
    handle   text NOT NULL,
    url      text
);
CREATE UNIQUE INDEX actor_platform_presences_handle ON actor_platform_presences (platform, lower(handle));
CREATE INDEX actor_platform_presences_actor ON actor_platform_presences (actor_id);

CREATE TABLE actor_lists (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    title       text,
    description text
);

CREATE TABLE actor_list_members (
    list_id  bigint NOT NULL REFERENCES actor_lists (id) ON DELETE CASCADE,
    actor_id bigint NOT NULL REFERENCES actors (id) ON DELETE CASCADE,
    PRIMARY KEY (list_id, actor_id)
);
CREATE INDEX actor_list_members_actor ON actor_list_members (actor_id);

CREATE TABLE query_design_actor_lists (
    query_design_id bigint NOT NULL REFERENCES query_designs (id) ON DELETE CASCADE,
    list_id         bigint NOT NULL REFERENCES actor_lists (id) ON DELETE CASCADE,
    PRIMARY KEY (query_design_id, list_id)
);

CREATE TABLE item_actors (
    item_id   bigint NOT NULL REFERENCES item_keys (item_id) ON DELETE CASCADE,
    actor_id  bigint NOT NULL REFERENCES actors (id) ON DELETE CASCADE,
    role      text NOT NULL CHECK (role IN ('author', 'mention')),
    method    text NOT NULL CHECK (method IN ('presence', 'name', 'alias')),
    matched   text NOT NULL,
    linked_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (item_id, actor_id, role)
);
CREATE INDEX item_actors_actor ON item_actors (actor_id, role);

ALTER TABLE raw_items ADD COLUMN author_pseudonym text;
CREATE INDEX raw_items_author_pseudonym ON raw_items (author_pseudonym);

CREATE TABLE volume_stats (
    day             date NOT NULL,
    query_design_id bigint REFERENCES query_designs (id) ON DELETE CASCADE,  -- NULL: items outside any design
    dimension       text NOT NULL
                    CHECK (dimension IN ('platform', 'arena', 'source', 'language', 'term', 'sentiment', 'actor')),
    value           text NOT NULL,
    items           bigint NOT NULL
);
CREATE UNIQUE INDEX volume_stats_key ON volume_stats (day, coalesce(query_design_id, 0), dimension, value);
CREATE INDEX volume_stats_design ON volume_stats (query_design_id, dimension, day);

CREATE TABLE actor_network_nodes (
    node            text PRIMARY KEY,   -- 'actor:<name>' or an author pseudonym
    label           text NOT NULL,      -- the actor's name, or the pseudonym
    kind            text NOT NULL,      -- the actor's kind, or 'author'
    items           integer NOT NULL,
    degree          integer NOT NULL,
    weighted_degree double precision NOT NULL,
    betweenness     double precision NOT NULL,
    community       integer NOT NULL,
    computed_at     timestamptz NOT NULL DEFAULT now()
);
"""

DOWNGRADE = """
DROP TABLE actor_network_nodes;
DROP TABLE volume_stats;
DROP INDEX raw_items_author_pseudonym;
ALTER TABLE raw_items DROP COLUMN author_pseudonym;
DROP TABLE item_actors;
DROP TABLE query_design_actor_lists;
DROP TABLE actor_list_members;
DROP TABLE actor_lists;
DROP TABLE actor_platform_presences;
DROP TABLE actor_aliases;
DROP TABLE actors;
"""


#: Authors already stored in clear become pseudonyms (no actor is a public figure before this revision),
#: but for the items of a design that keeps its authors in clear (``authors: clear``, on a re-upgrade).
PSEUDONYMISE = """
WITH clear_runs AS (
    SELECT c.id FROM collection_runs c JOIN query_designs q ON q.id = c.query_design_id
     WHERE q.arenas ->> 'authors' = 'clear'
)
UPDATE raw_items r
   SET author_pseudonym = m.pseudonym,
       author = CASE WHEN r.collection_run_id IN (SELECT id FROM clear_runs) THEN r.author END,
       author_handle = CASE WHEN r.collection_run_id IN (SELECT id FROM clear_runs) THEN r.author_handle END,
       raw_metadata = CASE WHEN r.collection_run_id IN (SELECT id FROM clear_runs) THEN r.raw_metadata
                           ELSE r.raw_metadata - CAST(:identifying AS text[]) END
  FROM jsonb_to_recordset(CAST(:mapping AS jsonb)) AS m (platform text, who text, pseudonym text)
 WHERE coalesce(r.platform, '') = m.platform AND coalesce(r.author_handle, r.author) = m.who
"""


def upgrade() -> None:
    op.execute(UPGRADE)
    connection = op.get_bind()
    authors = connection.execute(
        sa.text(
            "SELECT DISTINCT coalesce(platform, ''), coalesce(author_handle, author) FROM raw_items "
            "WHERE coalesce(author_handle, author) IS NOT NULL"
        )
    ).all()
    if not authors:
        return
    from observatory_assets.lib.pseudonyms import IDENTIFYING_FIELDS, author_pseudonym
    from resources.embedded import author_pseudonym_key

    key = author_pseudonym_key()
    mapping = [{"platform": p, "who": who, "pseudonym": author_pseudonym(key, p, who)} for p, who in authors]
    connection.execute(
        sa.text(PSEUDONYMISE), {"mapping": json.dumps(mapping), "identifying": sorted(IDENTIFYING_FIELDS)}
    )


def downgrade() -> None:
    op.execute(DOWNGRADE)
