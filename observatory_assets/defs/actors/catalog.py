"""Actors as code: the people, organisations and media a design follows, in YAML beside the source catalog.

Every ``*.yaml`` file in ``sources/actors/`` (the source catalog's directory, ``OBSERVATORY_SOURCES_DIR``)
holds an ``actors`` list, a ``lists`` list, or both. An **actor** has a name, a kind (person,
organisation, media, other), a public-figure flag (only a public figure's name and handle are stored in
clear on their items), other names it goes by, and its accounts on platforms; a **list** is a named group
of actors that a query design can follow. Every error is one line naming the file and the field. The sync
is idempotent: it upserts by name, replaces each actor's aliases and presences with the catalog's, and
deletes actors and lists that left the catalog (their links go with them); it returns the actors whose
entry changed, so only their items are linked again.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import Connection, text

from observatory_assets.lib.yaml_files import read_yaml_model

#: The folder of actor files inside the source catalog's directory.
ACTORS_FOLDER = "actors"
#: Platforms an actor can have a presence on (the source formats of the arenas, and the web).
PLATFORMS = ("reddit", "bluesky", "telegram", "youtube", "gdelt", "rss", "web", "x", "facebook", "instagram")


class ActorCatalogError(ValueError):
    """An actor file that cannot be used; the message is one line naming the file and the field."""


class PresenceSpec(BaseModel):
    """An actor's account: a handle (or channel id) on a platform, and optionally where it lives."""

    model_config = ConfigDict(extra="forbid")
    platform: Literal[PLATFORMS]
    handle: str = Field(min_length=1, max_length=300)
    url: str | None = None

    @field_validator("handle")
    @classmethod
    def _handle(cls, handle: str) -> str:
        handle = handle.strip().removeprefix("@")
        if not handle or any(c.isspace() for c in handle):
            raise ValueError("must be one handle or channel id, without spaces")
        return handle

    @field_validator("url")
    @classmethod
    def _url(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(("https://", "http://")):
            raise ValueError("must be an http(s) URL")
        return url


class ActorSpec(BaseModel):
    """One actor as the catalog describes it."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=300)
    kind: Literal["person", "organisation", "media", "other"]
    public_figure: bool = False
    description: str | None = None
    aliases: list[str] = Field(default_factory=list)
    presences: list[PresenceSpec] = Field(default_factory=list)

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        if not name.strip():
            raise ValueError("must not be blank")
        return name.strip()

    @field_validator("aliases")
    @classmethod
    def _aliases(cls, aliases: list[str]) -> list[str]:
        cleaned = [alias.strip() for alias in aliases]
        if any(len(alias) < 2 for alias in cleaned):
            raise ValueError("every alias needs at least two characters")
        return list(dict.fromkeys(cleaned))

    def fingerprint(self) -> str:
        """What linking depends on: a change here relinks the actor's items."""
        return hashlib.sha256(orjson.dumps(self.model_dump(), option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]


class ListSpec(BaseModel):
    """A named group of actors a query design can follow."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    title: str | None = None
    description: str | None = None
    members: list[str] = Field(default_factory=list)


class ActorFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    actors: list[ActorSpec] = Field(default_factory=list)
    lists: list[ListSpec] = Field(default_factory=list)


@dataclass
class ActorCatalog:
    """Every actor and list of the catalog, with the file each came from."""

    actors: dict[str, tuple[str, ActorSpec]] = field(default_factory=dict)
    lists: dict[str, tuple[str, ListSpec]] = field(default_factory=dict)


def load_actor_file(path: Path) -> ActorFile:
    return read_yaml_model(path, ActorFile, ActorCatalogError, "a mapping with 'actors' and/or 'lists'")


def load_actor_catalog(sources_directory: Path) -> ActorCatalog:
    """The validated actor catalog in ``sources_directory/actors`` (empty when the folder does not exist);
    the first problem found is an :class:`ActorCatalogError`."""
    catalog = ActorCatalog()
    folder = sources_directory / ACTORS_FOLDER
    if not folder.is_dir():
        return catalog
    handles: dict[tuple[str, str], str] = {}
    for path in sorted(p for p in folder.iterdir() if p.suffix in (".yaml", ".yml")):
        loaded = load_actor_file(path)
        for kind, entries, into in (("actor", loaded.actors, catalog.actors), ("list", loaded.lists, catalog.lists)):
            for entry in entries:
                if entry.name in into:
                    raise ActorCatalogError(
                        f"{path.name}: field name: {kind} {entry.name!r} is already defined in {into[entry.name][0]}"
                    )
                into[entry.name] = (path.name, entry)
        for actor in loaded.actors:
            for presence in actor.presences:
                key = (presence.platform, presence.handle.lower())
                if key in handles and handles[key] != actor.name:
                    raise ActorCatalogError(
                        f"{path.name}: field actors.{actor.name}.presences: {presence.platform} handle "
                        f"{presence.handle!r} already belongs to {handles[key]!r}"
                    )
                handles[key] = actor.name
    for file_name, listed in catalog.lists.values():
        for member in listed.members:
            if member not in catalog.actors:
                raise ActorCatalogError(f"{file_name}: field lists.{listed.name}.members: unknown actor {member!r}")
    return catalog


@dataclass(frozen=True)
class ActorSync:
    """What a sync changed: the actors whose entries are new or changed (their items are linked again)."""

    actors: int
    lists: int
    changed: list[int]
    removed: list[str]


def sync_actor_catalog(conn: Connection, catalog: ActorCatalog) -> ActorSync:
    """Upsert actors and lists by name, replace aliases, presences and members with the catalog's, delete
    what left the catalog. Idempotent: a second sync of the same catalog changes nothing."""
    actors = [
        {"name": spec.name, "kind": spec.kind, "public": spec.public_figure, "description": spec.description,
         "file": file_name, "fingerprint": spec.fingerprint()}
        for file_name, spec in catalog.actors.values()
    ]  # fmt: skip
    removed = (
        conn.execute(
            text("DELETE FROM actors WHERE NOT (name = ANY(CAST(:names AS text[]))) RETURNING name"),
            {"names": list(catalog.actors)},
        )
        .scalars()
        .all()
    )
    changed = (
        conn.execute(
            text(
                """
                INSERT INTO actors AS a (name, kind, public_figure, description, catalog_file, fingerprint)
                SELECT * FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS r (
                    name text, kind text, public boolean, description text, file text, fingerprint text)
                ON CONFLICT (name) DO UPDATE SET
                    kind = EXCLUDED.kind, public_figure = EXCLUDED.public_figure,
                    description = EXCLUDED.description, catalog_file = EXCLUDED.catalog_file,
                    fingerprint = EXCLUDED.fingerprint, updated_at = now()
                 WHERE a.fingerprint IS DISTINCT FROM EXCLUDED.fingerprint
                    OR a.catalog_file IS DISTINCT FROM EXCLUDED.catalog_file
                RETURNING id
                """
            ),
            {"rows": orjson.dumps(actors).decode()},
        )
        .scalars()
        .all()
    )
    _replace_names_and_presences(conn, catalog)
    _sync_lists(conn, catalog)
    return ActorSync(actors=len(actors), lists=len(catalog.lists), changed=sorted(changed), removed=sorted(removed))


def _replace_names_and_presences(conn: Connection, catalog: ActorCatalog) -> None:
    aliases = [{"actor": spec.name, "alias": alias} for _, spec in catalog.actors.values() for alias in spec.aliases]
    presences = [
        {"actor": spec.name, "platform": p.platform, "handle": p.handle, "url": p.url}
        for _, spec in catalog.actors.values()
        for p in spec.presences
    ]
    conn.execute(
        text(
            """
            WITH wanted AS (
                SELECT a.id AS actor_id, w.alias
                  FROM jsonb_to_recordset(CAST(:aliases AS jsonb)) AS w (actor text, alias text)
                  JOIN actors a ON a.name = w.actor
            ), dropped AS (
                DELETE FROM actor_aliases x WHERE (x.actor_id, x.alias) NOT IN (SELECT actor_id, alias FROM wanted)
            )
            INSERT INTO actor_aliases (actor_id, alias) SELECT actor_id, alias FROM wanted ON CONFLICT DO NOTHING
            """
        ),
        {"aliases": orjson.dumps(aliases).decode()},
    )
    wanted = """
        SELECT a.id AS actor_id, w.platform, w.handle, w.url
          FROM jsonb_to_recordset(CAST(:presences AS jsonb)) AS w (actor text, platform text, handle text, url text)
          JOIN actors a ON a.name = w.actor
    """
    parameters = {"presences": orjson.dumps(presences).decode()}
    conn.execute(
        text(
            f"""DELETE FROM actor_platform_presences x
                 WHERE (x.actor_id, x.platform, x.handle) NOT IN (SELECT actor_id, platform, handle FROM ({wanted}) w)"""
        ),
        parameters,
    )
    conn.execute(
        text(
            f"""INSERT INTO actor_platform_presences (actor_id, platform, handle, url)
                SELECT actor_id, platform, handle, url FROM ({wanted}) w
                ON CONFLICT (platform, lower(handle)) DO UPDATE SET url = EXCLUDED.url"""
        ),
        parameters,
    )


def _sync_lists(conn: Connection, catalog: ActorCatalog) -> None:
    lists = [{"name": s.name, "title": s.title, "description": s.description} for _, s in catalog.lists.values()]
    members = [{"list": s.name, "actor": m} for _, s in catalog.lists.values() for m in s.members]
    conn.execute(
        text("DELETE FROM actor_lists WHERE NOT (name = ANY(CAST(:names AS text[])))"), {"names": list(catalog.lists)}
    )
    conn.execute(
        text(
            """
            INSERT INTO actor_lists (name, title, description)
            SELECT * FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS r (name text, title text, description text)
            ON CONFLICT (name) DO UPDATE SET title = EXCLUDED.title, description = EXCLUDED.description
            """
        ),
        {"rows": orjson.dumps(lists).decode()},
    )
    conn.execute(
        text(
            """
            WITH wanted AS (
                SELECT l.id AS list_id, a.id AS actor_id
                  FROM jsonb_to_recordset(CAST(:members AS jsonb)) AS m (list text, actor text)
                  JOIN actor_lists l ON l.name = m.list
                  JOIN actors a ON a.name = m.actor
            ), dropped AS (
                DELETE FROM actor_list_members x WHERE (x.list_id, x.actor_id) NOT IN (SELECT list_id, actor_id FROM wanted)
            )
            INSERT INTO actor_list_members (list_id, actor_id) SELECT list_id, actor_id FROM wanted ON CONFLICT DO NOTHING
            """
        ),
        {"members": orjson.dumps(members).decode()},
    )


@dataclass(frozen=True)
class ActorRow:
    """An actor as ``observatory actors list|show`` prints it."""

    name: str
    kind: str
    public_figure: bool
    description: str | None
    aliases: list[str]
    presences: list[dict]
    lists: list[str]
    authored_items: int
    mentioned_in: int

    def as_json(self) -> dict:
        return self.__dict__.copy()


def actor_rows(conn: Connection, name: str | None = None) -> list[ActorRow]:
    """Every actor (or the one named), with its names, presences, lists and item counts."""
    found = conn.execute(
        text(
            """
            SELECT a.name, a.kind, a.public_figure, a.description,
                   coalesce((SELECT array_agg(alias ORDER BY alias) FROM actor_aliases WHERE actor_id = a.id), '{}') AS aliases,
                   coalesce((SELECT jsonb_agg(jsonb_build_object('platform', platform, 'handle', handle, 'url', url)
                                              ORDER BY platform, handle)
                               FROM actor_platform_presences WHERE actor_id = a.id), '[]') AS presences,
                   coalesce((SELECT array_agg(l.name ORDER BY l.name) FROM actor_list_members m
                               JOIN actor_lists l ON l.id = m.list_id WHERE m.actor_id = a.id), '{}') AS lists,
                   (SELECT count(*) FROM item_actors WHERE actor_id = a.id AND role = 'author') AS authored_items,
                   (SELECT count(*) FROM item_actors WHERE actor_id = a.id AND role = 'mention') AS mentioned_in
              FROM actors a
             WHERE CAST(:name AS text) IS NULL OR a.name = :name
             ORDER BY a.name
            """
        ),
        {"name": name},
    ).mappings()
    return [ActorRow(**row) for row in found]
