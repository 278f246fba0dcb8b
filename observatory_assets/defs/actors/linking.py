"""Linking items to actors: who wrote an item, and whom it mentions.

Authorship is found on the pseudonymised author (``raw_items.author_pseudonym``, the keyed hash of the
platform and the author's handle, or of the author's name where the platform gives no handle), so it works
whether or not the author's name was kept: each catalog presence (platform and handle) and each of an
actor's names and aliases (on every platform the items come from) is pseudonymised with the same key. An
author stored in clear is also matched by name. An item's author is linked to the actor whose presence
matches first, else to the actor whose name or alias matches.
Mentions are the actor's name or aliases as whole words in the item's title or text, kept apart from
authorship (``role = 'mention'``), never of the item's own author. Linking is idempotent: a run's items, or
one actor's items after the catalog changed it, are linked again from scratch.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import orjson
from sqlalchemy import Connection, text

from observatory_assets.defs.actors.catalog import PLATFORMS, ActorCatalog, ActorSync, sync_actor_catalog
from observatory_assets.lib.pseudonyms import author_pseudonym, pseudonyms_of

#: Lower is preferred: an author linked by platform and handle is not linked again by name.
METHOD_RANK = {"presence": 0, "name": 1, "alias": 2}


@dataclass(frozen=True)
class LinkCounts:
    """How many links a linking pass wrote, by role."""

    authors: int
    mentions: int


def _actor_keys(conn: Connection, key: bytes, actor_ids: list[int] | None, platforms: list[str]) -> list[dict]:
    """(actor, pseudonym, method, matched) for every presence, and for every name and alias on ``platforms``."""
    scope = {"actors": actor_ids}
    presences = conn.execute(
        text(
            """SELECT actor_id, platform, handle FROM actor_platform_presences
                WHERE CAST(:actors AS bigint[]) IS NULL OR actor_id = ANY(:actors)"""
        ),
        scope,
    ).all()
    names = conn.execute(
        text(
            """SELECT id AS actor_id, name, 'name' AS method FROM actors
                WHERE CAST(:actors AS bigint[]) IS NULL OR id = ANY(:actors)
               UNION ALL
               SELECT actor_id, alias, 'alias' FROM actor_aliases
                WHERE CAST(:actors AS bigint[]) IS NULL OR actor_id = ANY(:actors)"""
        ),
        scope,
    ).all()
    keys = [
        {"actor": actor, "pseudonym": author_pseudonym(key, platform, handle), "method": "presence", "matched": handle}
        for actor, platform, handle in presences
    ]
    keys += [  # an author known by name alone (no handle) is pseudonymised by that name
        {"actor": actor, "pseudonym": author_pseudonym(key, platform, name), "method": method, "matched": name}
        for actor, name, method in names
        for platform in platforms
    ]
    keys += [  # an author kept in clear (a public figure, a design whose authors are clear)
        {"actor": actor, "lowered": name.lower(), "method": method, "matched": name} for actor, name, method in names
    ]
    return keys


def _mention_patterns(conn: Connection, actor_ids: list[int] | None) -> list[dict]:
    """A whole-word, case-insensitive pattern (Postgres ARE) for each name and alias of the actors."""
    rows = conn.execute(
        text(
            """SELECT id, name, 'name' FROM actors WHERE CAST(:actors AS bigint[]) IS NULL OR id = ANY(:actors)
               UNION ALL
               SELECT actor_id, alias, 'alias' FROM actor_aliases
                WHERE CAST(:actors AS bigint[]) IS NULL OR actor_id = ANY(:actors)"""
        ),
        {"actors": actor_ids},
    ).all()
    return [
        {"actor": actor, "needle": name.lower(), "pattern": r"\m" + re.escape(name) + r"\M", "method": method,
         "matched": name}
        for actor, name, method in rows
    ]  # fmt: skip


_LINK_AUTHORS = """
WITH k AS (
    SELECT * FROM jsonb_to_recordset(CAST(:keys AS jsonb))
        AS k (actor bigint, pseudonym text, lowered text, method text, matched text, rank int)
), candidates AS (
    SELECT r.id, k.actor, k.method, k.matched, k.rank
      FROM raw_items r JOIN k ON k.pseudonym = r.author_pseudonym
     WHERE CAST(:run AS bigint) IS NULL OR r.collection_run_id = :run
    UNION ALL
    SELECT r.id, k.actor, k.method, k.matched, k.rank
      FROM raw_items r JOIN k ON k.lowered = lower(btrim(r.author))
     WHERE (CAST(:run AS bigint) IS NULL OR r.collection_run_id = :run) AND k.lowered IS NOT NULL
), best AS (
    SELECT id, min(rank) AS rank FROM candidates GROUP BY id
)
INSERT INTO item_actors (item_id, actor_id, role, method, matched)
SELECT DISTINCT ON (c.id, c.actor) c.id, c.actor, 'author', c.method, c.matched
  FROM candidates c JOIN best b ON b.id = c.id AND b.rank = c.rank
 ORDER BY c.id, c.actor, c.rank
ON CONFLICT (item_id, actor_id, role) DO UPDATE SET method = EXCLUDED.method, matched = EXCLUDED.matched
"""

_LINK_MENTIONS = """
INSERT INTO item_actors (item_id, actor_id, role, method, matched)
SELECT DISTINCT ON (r.id, p.actor) r.id, p.actor, 'mention', p.method, p.matched
  FROM raw_items r
  JOIN jsonb_to_recordset(CAST(:patterns AS jsonb)) AS p (actor bigint, needle text, pattern text, method text, matched text)
    ON strpos(lower(coalesce(r.title, '') || ' ' || coalesce(r.text, '')), p.needle) > 0
   AND (coalesce(r.title, '') || ' ' || coalesce(r.text, '')) ~* p.pattern
 WHERE (CAST(:run AS bigint) IS NULL OR r.collection_run_id = :run)
   AND NOT EXISTS (SELECT 1 FROM item_actors a WHERE a.item_id = r.id AND a.actor_id = p.actor AND a.role = 'author')
 ORDER BY r.id, p.actor, p.method DESC
ON CONFLICT (item_id, actor_id, role) DO UPDATE SET method = EXCLUDED.method, matched = EXCLUDED.matched
"""


def link_items(
    conn: Connection, key: bytes, *, run_id: int | None = None, actor_ids: list[int] | None = None
) -> LinkCounts:
    """Link the items of collection run ``run_id`` (all items when None) to the actors ``actor_ids`` (all
    actors when None), replacing the links those items and actors had."""
    conn.execute(
        text(
            """DELETE FROM item_actors ia
                WHERE (CAST(:actors AS bigint[]) IS NULL OR ia.actor_id = ANY(:actors))
                  AND (CAST(:run AS bigint) IS NULL
                       OR ia.item_id IN (SELECT item_id FROM item_keys WHERE collection_run_id = :run))"""
        ),
        {"actors": actor_ids, "run": run_id},
    )
    if actor_ids == []:
        return LinkCounts(0, 0)
    platforms = (
        conn.execute(
            text(
                """SELECT DISTINCT coalesce(platform, '') FROM raw_items
                    WHERE CAST(:run AS bigint) IS NULL OR collection_run_id = :run"""
            ),
            {"run": run_id},
        )
        .scalars()
        .all()
    )
    keys = [{**k, "rank": METHOD_RANK[k["method"]]} for k in _actor_keys(conn, key, actor_ids, platforms)]
    authors = conn.execute(text(_LINK_AUTHORS), {"keys": orjson.dumps(keys).decode(), "run": run_id}).rowcount
    patterns = _mention_patterns(conn, actor_ids)
    mentions = conn.execute(text(_LINK_MENTIONS), {"patterns": orjson.dumps(patterns).decode(), "run": run_id}).rowcount
    return LinkCounts(authors=authors, mentions=mentions)


def sync_actors(
    conn: Connection, catalog: ActorCatalog, key: Callable[[], bytes], design_lists: dict[str, list[str]]
) -> ActorSync:
    """Sync the actor catalog and the actor lists each design follows (``design_lists``), and link again the
    items of every actor whose entry changed (``key`` gives the pseudonym key, asked for only then)."""
    synced = sync_actor_catalog(conn, catalog)
    follows = [{"design": design, "list": name} for design, names in design_lists.items() for name in names]
    conn.execute(
        text(
            """DELETE FROM query_design_actor_lists f USING query_designs d
                WHERE d.id = f.query_design_id AND d.name = ANY(CAST(:designs AS text[]))"""
        ),
        {"designs": list(design_lists)},
    )
    conn.execute(
        text(
            """INSERT INTO query_design_actor_lists (query_design_id, list_id)
               SELECT d.id, l.id FROM jsonb_to_recordset(CAST(:follows AS jsonb)) AS f (design text, list text)
                 JOIN query_designs d ON d.name = f.design JOIN actor_lists l ON l.name = f.list"""
        ),
        {"follows": orjson.dumps(follows).decode()},
    )
    if synced.changed:
        link_items(conn, key(), actor_ids=synced.changed)
    return synced


def public_figure_pseudonyms(conn: Connection, key: bytes, platforms: Iterable[str]) -> frozenset[str]:
    """The pseudonyms under which public figures appear as authors: each presence's handle on its platform,
    and each name and alias on every one of ``platforms`` (ingestion keeps these authors in clear)."""
    presences = conn.execute(
        text(
            """SELECT p.platform, p.handle FROM actor_platform_presences p
                 JOIN actors a ON a.id = p.actor_id WHERE a.public_figure"""
        )
    ).all()
    names = (
        conn.execute(
            text(
                """SELECT name FROM actors WHERE public_figure
                   UNION SELECT x.alias FROM actor_aliases x JOIN actors a ON a.id = x.actor_id WHERE a.public_figure"""
            )
        )
        .scalars()
        .all()
    )
    found = {author_pseudonym(key, platform, handle) for platform, handle in presences}
    return frozenset(found | set(pseudonyms_of(key, {*platforms, *PLATFORMS}, names)))
