"""Sources and query designs as code: the ``sources/`` YAML catalog, validated and synced, and read back.

One folder of YAML files (``OBSERVATORY_SOURCES_DIR``, default ``sources/``); each
file holds a ``sources`` list, a ``designs`` list, or both. A **source** is a feed
the platform polls by itself (its URL, format, polling interval, credibility,
cost per request and per thousand items, whether it is an aggregator carrying
other outlets); a **query design** is what an analyst watches (terms per
language, the sources it draws on, an optional credit budget). Every error is
one line naming the file and the field. The sync is idempotent: it upserts by
name, never touches the polling state (validators, schedule, back-off), and a
source that left the catalog is deactivated, not deleted (its items keep it).

The read model (:func:`source_states`, :func:`design_states`, :func:`next_check_moment`) is what the
CLI, the UI and the polling sensor show of the catalog and its polling state.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx
import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from sqlalchemy import Connection, text

from observatory_assets.defs.collection.arenas.registry import ARENAS
from observatory_assets.defs.credits.ledger import sync_allocation
from observatory_assets.defs.ingestion.records import FORMATS
from observatory_assets.lib.yaml_files import read_yaml_model
from resources.settings import platform_settings

_INTERVAL = re.compile(r"^(\d+)\s*([smhd])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
#: A budget without a window is valid for ever.
ALWAYS = (date(2000, 1, 1), date(9999, 12, 31))


class CatalogError(ValueError):
    """A catalog file that cannot be used; the message is one line naming the file and the field."""


def interval_seconds(poll: str) -> int | None:
    """``'15m'`` → 900; ``'auto'`` → None (the interval adapts to the feed)."""
    if poll == "auto":
        return None
    number, unit = _INTERVAL.match(poll).groups()
    return int(number) * _UNIT_SECONDS[unit]


def pollable_url(url: str) -> str:
    """``url`` if the poller can fetch it: http(s), a host, a port from 1 to 65535 if one is given, no
    credentials, no whitespace; else ValueError saying what is wrong, in one line."""
    if not re.match(r"^https?://", url, re.IGNORECASE):
        raise ValueError("must be an http(s) URL")
    if re.search(r"\s", url):
        raise ValueError("must not contain whitespace")
    try:
        parts = urlsplit(url)
        port = parts.port
        host = httpx.URL(url).host
    except (ValueError, httpx.InvalidURL) as error:
        raise ValueError(f"is not a valid URL ({str(error).rstrip('.')})") from None
    if not host or not parts.hostname:
        raise ValueError("must name a host")
    if port == 0:
        raise ValueError("must have a port from 1 to 65535")
    if parts.username is not None or parts.password is not None:
        raise ValueError("must not carry credentials (user:password@)")
    return url


class Cost(BaseModel):
    """Credits a source costs: per request sent (whatever the answer) and per thousand items loaded."""

    model_config = ConfigDict(extra="forbid")
    per_request: float = Field(default=0, ge=0)
    per_1k_items: float = Field(default=0, ge=0)


class SourceSpec(BaseModel):
    """One source: a feed polled at ``url``, or (no ``url``) one delivered by files, described all the same."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    url: str | None = None
    format: str
    #: An arena source's own fields (its API's query parameters), validated by the arena at sync.
    params: dict[str, Any] | None = None
    poll: str = "auto"
    credibility: float = Field(default=0.5, ge=0, le=1)
    language: str | None = None
    active: bool = True
    cost: Cost = Field(default_factory=Cost)
    aggregator: bool = False

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str | None) -> str | None:
        if url is not None:
            pollable_url(url)
        return url

    @field_validator("format")
    @classmethod
    def _format(cls, fmt: str) -> str:
        if fmt not in FORMATS and fmt not in ARENAS:
            raise ValueError(f"must be one of {', '.join((*FORMATS, *ARENAS))}")
        return fmt

    @model_validator(mode="after")
    def _arena(self) -> SourceSpec:
        """An arena source's params are validated by its arena and merged into the stored endpoint."""
        arena = ARENAS.get(self.format)
        if arena is None:
            if self.params is not None:
                raise ValueError(f"params: a {self.format} source takes none (only {', '.join(ARENAS)} sources do)")
            return self
        if self.url is None:
            raise ValueError(f"url: a {self.format} source needs its API endpoint")
        try:
            params = arena.params.model_validate(self.params or {})
        except ValidationError as error:
            problem = error.errors()[0]
            where = ".".join(str(part) for part in problem["loc"])
            message = problem["msg"].removeprefix("Value error, ")
            raise ValueError(f"params{'.' + where if where else ''}: {message}") from None
        self.url = arena.endpoint(self.url, params)
        if not self.cost.per_request and arena.default_cost_of(params):
            self.cost = Cost(per_request=arena.default_cost_of(params), per_1k_items=self.cost.per_1k_items)
        return self

    @field_validator("poll")
    @classmethod
    def _poll(cls, poll: str) -> str:
        poll = str(poll).strip().lower()
        if poll != "auto" and not _INTERVAL.match(poll):
            raise ValueError("must be 'auto' or an interval such as 15m, 2h or 1d")
        if poll != "auto" and not 60 <= interval_seconds(poll) <= 7 * 86400:
            raise ValueError("must be between 1m and 7d")
        return poll


class Budget(BaseModel):
    """Credits a design may spend within a validity window (UTC days, both included)."""

    model_config = ConfigDict(extra="forbid")
    credits: float = Field(ge=0)
    valid_from: date | None = None
    valid_until: date | None = None

    @model_validator(mode="after")
    def _window(self) -> Budget:
        if self.valid_from and self.valid_until and self.valid_until < self.valid_from:
            raise ValueError("valid_until is before valid_from")
        return self


class DesignSpec(BaseModel):
    """A query design: what is watched, in which sources, with which budget."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    title: str | None = None
    terms: dict[str, list[str]] = Field(default_factory=dict)
    sources: list[str] = Field(default_factory=list)
    budget: Budget | None = None
    #: Actor lists (``sources/actors/``) whose members' own feeds the design follows.
    actor_lists: list[str] = Field(default_factory=list)
    #: ``clear`` keeps every author's name and handle; by default only public figures' are kept.
    authors: Literal["pseudonymised", "clear"] = "pseudonymised"


class CatalogFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sources: list[SourceSpec] = Field(default_factory=list)
    designs: list[DesignSpec] = Field(default_factory=list)


@dataclass
class Catalog:
    """Every source and design of a catalog directory, with the file each came from."""

    sources: dict[str, tuple[str, SourceSpec]] = field(default_factory=dict)
    designs: dict[str, tuple[str, DesignSpec]] = field(default_factory=dict)


def sources_dir(override: str | Path | None = None) -> Path:
    """The catalog directory: ``override``, else ``OBSERVATORY_SOURCES_DIR``, else ``sources/``."""
    return Path(override).resolve() if override else platform_settings().sources_dir


def load_catalog_file(path: Path) -> CatalogFile:
    return read_yaml_model(path, CatalogFile, CatalogError, "a mapping with 'sources' and/or 'designs'")


def load_catalog(directory: Path) -> Catalog:
    """The validated catalog of ``directory``; the first problem found is a :class:`CatalogError`."""
    if not directory.is_dir():
        raise CatalogError(f"sources directory {directory} does not exist")
    catalog = Catalog()
    for path in sorted(p for p in directory.iterdir() if p.suffix in (".yaml", ".yml")):
        loaded = load_catalog_file(path)
        for kind, entries, into in (
            ("source", loaded.sources, catalog.sources),
            ("design", loaded.designs, catalog.designs),
        ):
            for entry in entries:
                if entry.name in into:
                    raise CatalogError(
                        f"{path.name}: field name: {kind} {entry.name!r} is already defined in {into[entry.name][0]}"
                    )
                into[entry.name] = (path.name, entry)
    for file_name, design in catalog.designs.values():
        for source in design.sources:
            if source not in catalog.sources:
                raise CatalogError(f"{file_name}: field designs.{design.name}.sources: unknown source {source!r}")
    return catalog


@dataclass(frozen=True)
class CatalogSync:
    """What a sync changed."""

    sources: int
    designs: int
    deactivated: list[str]
    budgets: dict[str, float]
    designs_removed: list[str] = field(default_factory=list)


def _remove_designs_not_in(conn: Connection, names: list[str]) -> list[str]:
    """Designs synced from the catalog that left it lose their sources (no run is planned for them, nothing is
    reserved) and are no longer marked as the catalog's; their history stays. Their names."""
    removed = conn.execute(
        text(
            """
            UPDATE query_designs SET catalog_file = NULL
             WHERE catalog_file IS NOT NULL AND NOT (name = ANY(CAST(:names AS text[])))
            RETURNING id, name
            """
        ),
        {"names": names},
    ).all()
    conn.execute(
        text("DELETE FROM query_design_sources WHERE query_design_id = ANY(CAST(:ids AS bigint[]))"),
        {"ids": [row.id for row in removed]},
    )
    return sorted(row.name for row in removed)


def _sync_sources(conn: Connection, catalog: Catalog) -> list[str]:
    """Upsert the catalog's sources (see :func:`sync_catalog`); the names of those deactivated because
    they left the catalog."""
    rows = [
        {
            "name": spec.name,
            "url": spec.url,
            "type": spec.format,
            "poll": spec.poll,
            "credibility": spec.credibility,
            "language": spec.language,
            "active": spec.active,
            "per_request": spec.cost.per_request,
            "per_1k": spec.cost.per_1k_items,
            "aggregator": spec.aggregator,
            "file": file_name,
        }
        for file_name, spec in catalog.sources.values()
    ]
    conn.execute(
        text(
            """
            INSERT INTO sources AS s (name, url, catalog_url, type, poll, credibility, language, active,
                                      cost_per_request, cost_per_1k_items, aggregator, catalog_file)
            SELECT r.name, r.url, r.url, r.type, r.poll, r.credibility, r.language, r.active, r.per_request,
                   r.per_1k, r.aggregator, r.file
              FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS r (
                name text, url text, type text, poll text, credibility real, language text, active boolean,
                per_request numeric, per_1k numeric, aggregator boolean, file text)
            ON CONFLICT (name) DO UPDATE SET
                url = CASE WHEN s.catalog_url IS DISTINCT FROM EXCLUDED.catalog_url THEN EXCLUDED.url ELSE s.url END,
                catalog_url = EXCLUDED.catalog_url, type = EXCLUDED.type, poll = EXCLUDED.poll,
                credibility = EXCLUDED.credibility, language = EXCLUDED.language,
                active = EXCLUDED.active AND (s.catalog_url IS DISTINCT FROM EXCLUDED.catalog_url
                                              OR s.last_status IS DISTINCT FROM 410),
                cost_per_request = EXCLUDED.cost_per_request, cost_per_1k_items = EXCLUDED.cost_per_1k_items,
                aggregator = EXCLUDED.aggregator, catalog_file = EXCLUDED.catalog_file,
                etag = CASE WHEN s.catalog_url IS DISTINCT FROM EXCLUDED.catalog_url THEN NULL ELSE s.etag END,
                last_modified = CASE WHEN s.catalog_url IS DISTINCT FROM EXCLUDED.catalog_url THEN NULL
                                     ELSE s.last_modified END,
                last_status = CASE WHEN s.catalog_url IS DISTINCT FROM EXCLUDED.catalog_url THEN NULL
                                   ELSE s.last_status END,
                next_check_at = CASE WHEN s.catalog_url IS DISTINCT FROM EXCLUDED.catalog_url OR NOT s.active THEN NULL
                                     ELSE s.next_check_at END
            """
        ),
        {"rows": orjson.dumps(rows).decode()},
    )
    deactivated = (
        conn.execute(
            text(
                """
                UPDATE sources SET active = false
                 WHERE catalog_file IS NOT NULL AND active AND NOT (name = ANY(CAST(:names AS text[])))
                RETURNING name
                """
            ),
            {"names": list(catalog.sources)},
        )
        .scalars()
        .all()
    )
    return list(deactivated)


def _sync_designs(conn: Connection, catalog: Catalog) -> list[str]:
    """Upsert the catalog's designs, their sources and budgets; the names of the designs that left it."""
    designs = [
        {
            "name": spec.name,
            "title": spec.title or spec.name,
            "terms": [{"term": term, "language": language} for language, terms in spec.terms.items() for term in terms],
            "sources": spec.sources,
            "budget": spec.budget.credits if spec.budget else None,
            "file": file_name,
            "follows": {"actor_lists": spec.actor_lists, "authors": spec.authors},
        }
        for file_name, spec in catalog.designs.values()
    ]
    conn.execute(
        text(
            """
            INSERT INTO query_designs (name, title, search_terms, arenas, credit_budget, catalog_file)
            SELECT d.name, d.title, d.terms, jsonb_build_object('sources', d.sources) || d.follows, d.budget, d.file
              FROM jsonb_to_recordset(CAST(:designs AS jsonb))
                   AS d (name text, title text, terms jsonb, sources jsonb, budget numeric, file text, follows jsonb)
            ON CONFLICT (name) DO UPDATE SET
                title = EXCLUDED.title, search_terms = EXCLUDED.search_terms, arenas = EXCLUDED.arenas,
                credit_budget = EXCLUDED.credit_budget, catalog_file = EXCLUDED.catalog_file
            """
        ),
        {"designs": orjson.dumps(designs).decode()},
    )
    removed = _remove_designs_not_in(conn, list(catalog.designs))
    links = [{"design": spec.name, "source": source} for _, spec in catalog.designs.values() for source in spec.sources]
    conn.execute(
        text(
            """
            WITH wanted AS (
                SELECT d.id AS query_design_id, s.id AS source_id
                  FROM jsonb_to_recordset(CAST(:links AS jsonb)) AS l (design text, source text)
                  JOIN query_designs d ON d.name = l.design
                  JOIN sources s ON s.name = l.source
            ), removed AS (
                DELETE FROM query_design_sources q
                 WHERE q.query_design_id IN (SELECT id FROM query_designs WHERE name = ANY(CAST(:designs AS text[])))
                   AND (q.query_design_id, q.source_id) NOT IN (SELECT query_design_id, source_id FROM wanted)
            )
            INSERT INTO query_design_sources (query_design_id, source_id)
            SELECT query_design_id, source_id FROM wanted
            ON CONFLICT DO NOTHING
            """
        ),
        {"links": orjson.dumps(links).decode(), "designs": list(catalog.designs)},
    )
    design_ids = dict(
        conn.execute(
            text("SELECT name, id FROM query_designs WHERE name = ANY(CAST(:names AS text[]))"),
            {"names": list(catalog.designs)},
        ).all()
    )
    for _, spec in catalog.designs.values():
        if spec.budget is not None:
            window = (spec.budget.valid_from or ALWAYS[0], spec.budget.valid_until or ALWAYS[1])
            sync_allocation(conn, design_ids[spec.name], spec.budget.credits, *window)
    return removed


def sync_catalog(conn: Connection, catalog: Catalog) -> CatalogSync:
    """Upsert the catalog's sources and designs (by name) and their links; deactivate catalog sources that
    left the catalog, and unlink the sources of designs that left it (no longer polled for, nor charged).
    Polling state is kept, and with it what the sources' answers decided: a 301/308's new URL and a 410's
    deactivation hold until the catalog gives that source another URL, which starts over (validators,
    status and schedule belonged to the old one). Idempotent: a second sync of the same catalog changes
    nothing."""
    deactivated = _sync_sources(conn, catalog)
    removed = _sync_designs(conn, catalog)
    return CatalogSync(
        sources=len(catalog.sources),
        designs=len(catalog.designs),
        deactivated=deactivated,
        designs_removed=removed,
        budgets={spec.name: spec.budget.credits for _, spec in catalog.designs.values() if spec.budget},
    )


def source_states(conn: Connection, name: str | None = None) -> list[dict]:
    """The catalog sources with their polling state (all, or the one called ``name``), by name; a source's
    ``platform`` is its format (``reddit``, ``bluesky``… for an arena, the feed or file kind otherwise),
    which its items carry unless a row names its own."""
    rows = conn.execute(
        text(
            """
            SELECT name, url, type AS format, type AS platform, active, poll, credibility, aggregator, etag, last_modified, last_status,
                   last_checked_at, next_check_at, error_count, last_error
              FROM sources
             WHERE catalog_file IS NOT NULL AND (CAST(:name AS text) IS NULL OR name = :name)
             ORDER BY name
            """
        ),
        {"name": name},
    ).mappings()
    return [
        {key: value.isoformat() if isinstance(value, datetime) else value for key, value in row.items()} for row in rows
    ]


def design_states(conn: Connection) -> list[dict]:
    """The query designs: name, title, terms per language, sources, budget."""
    rows = conn.execute(
        text(
            """
            SELECT d.name, coalesce(d.title, d.name) AS title, d.search_terms, d.credit_budget,
                   coalesce(array_agg(s.name ORDER BY s.name) FILTER (WHERE s.id IS NOT NULL), '{}') AS sources
              FROM query_designs d
              LEFT JOIN query_design_sources q ON q.query_design_id = d.id
              LEFT JOIN sources s ON s.id = q.source_id
             GROUP BY d.id ORDER BY d.name
            """
        )
    )
    designs = []
    for row in rows:
        terms: dict[str, list[str]] = defaultdict(list)
        for term in row.search_terms or []:
            terms[term.get("language") or "any"].append(term["term"])
        budget = None if row.credit_budget is None else float(row.credit_budget)
        designs.append(
            {"name": row.name, "title": row.title, "terms": dict(terms), "sources": list(row.sources), "budget": budget}
        )
    return designs


def next_check_moment(conn: Connection) -> datetime | None:
    """When the next active catalog source with a URL is due (None: there is none)."""
    return conn.execute(
        text("SELECT min(next_check_at) FROM sources WHERE active AND url IS NOT NULL AND catalog_file IS NOT NULL")
    ).scalar()
