"""Export filters: what a researcher selects, validated before anything is written."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, fields
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Connection,
    DateTime,
    Select,
    Text,
    any_,
    bindparam,
    column,
    literal_column,
    not_,
    select,
    table,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, psycopg

from observatory_assets.lib.takedowns import item_withdrawn

_LANGUAGE = re.compile(r"^[a-z]{2,3}(-[a-z0-9]{2,8})*$")


class ExportFilterError(ValueError):
    """A filter or option that cannot be applied; raised before any work starts."""


@dataclass(frozen=True)
class ExportFilters:
    """Which items a researcher asked for; every field narrows the selection, empty means all.

    ``published_from`` is inclusive and ``published_to`` exclusive (UTC); names
    are matched exactly; ``search_terms`` matches items that matched any of the
    terms; ``text_query`` is web-search syntax (``"exact phrase" -word or``)
    over title and text in the item's own language configuration.
    """

    published_from: datetime | None = None
    published_to: datetime | None = None
    sources: tuple[str, ...] = ()
    arenas: tuple[str, ...] = ()
    languages: tuple[str, ...] = ()
    query_designs: tuple[str, ...] = ()
    collection_runs: tuple[int, ...] = ()
    search_terms: tuple[str, ...] = ()
    text_query: str | None = None

    def as_json(self) -> dict[str, Any]:
        """The filters as recorded in ``exports.filters`` (only those that are set)."""
        out: dict[str, Any] = {}
        for name, value in self.__dict__.items():
            if isinstance(value, datetime):
                out[name] = value.isoformat()
            elif value not in (None, ()):
                out[name] = list(value) if isinstance(value, tuple) else value
        return out


#: The filter fields, in :class:`ExportFilters` order: the names of the config fields and CLI arguments too.
FILTER_FIELDS = tuple(f.name for f in fields(ExportFilters))


def _parse_instant(name: str, value: str | date | datetime | None) -> datetime | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, date):
        parsed = datetime(value.year, value.month, value.day)
    else:
        raw = value.strip()
        try:
            parsed = datetime.fromisoformat(raw[:-1] + "+00:00" if raw.endswith("Z") else raw)
        except ValueError:
            raise ExportFilterError(f"{name}: {value!r} is not an ISO 8601 date or date-time") from None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)


def _names(name: str, values: Iterable[str] | None) -> tuple[str, ...]:
    cleaned = []
    for value in values or ():
        if not isinstance(value, str) or not value.strip():
            raise ExportFilterError(f"{name}: empty or non-text value {value!r}")
        cleaned.append(value.strip())
    return tuple(dict.fromkeys(cleaned))


def build_filters(
    published_from: str | date | datetime | None = None,
    published_to: str | date | datetime | None = None,
    sources: Iterable[str] | None = None,
    arenas: Iterable[str] | None = None,
    languages: Iterable[str] | None = None,
    query_designs: Iterable[str] | None = None,
    collection_runs: Iterable[int] | None = None,
    search_terms: Iterable[str] | None = None,
    text_query: str | None = None,
) -> ExportFilters:
    """Filters from what a person typed (config, CLI); raises :class:`ExportFilterError` on bad syntax."""
    start = _parse_instant("published_from", published_from)
    end = _parse_instant("published_to", published_to)
    if start and end and start >= end:
        raise ExportFilterError(f"published_from ({start.isoformat()}) must be before published_to ({end.isoformat()})")
    langs = tuple(lang.lower() for lang in _names("languages", languages))
    bad = [lang for lang in langs if not _LANGUAGE.match(lang)]
    if bad:
        raise ExportFilterError(f"languages: {', '.join(map(repr, bad))} are not language codes like 'da' or 'en'")
    runs = []
    for run in collection_runs or ():
        if isinstance(run, bool) or not isinstance(run, int) and not (isinstance(run, str) and run.isdigit()):
            raise ExportFilterError(f"collection_runs: {run!r} is not a run id")
        runs.append(int(run))
    query = text_query.strip() if text_query else None
    if query is not None and len(query) > 1000:
        raise ExportFilterError("text_query is longer than 1000 characters")
    return ExportFilters(
        published_from=start,
        published_to=end,
        sources=_names("sources", sources),
        arenas=_names("arenas", arenas),
        languages=langs,
        query_designs=_names("query_designs", query_designs),
        collection_runs=tuple(dict.fromkeys(runs)),
        search_terms=_names("search_terms", search_terms),
        text_query=query or None,
    )


def filters_from(values: object) -> ExportFilters:
    """:func:`build_filters` from any object carrying the filter fields as attributes (a Dagster config,
    parsed CLI arguments)."""
    return build_filters(**{name: getattr(values, name) for name in FILTER_FIELDS})


# The tables a selection reads, as SQLAlchemy Core sees them (Alembic owns the schema), under the aliases the
# exported columns (``columns.py``) refer to: r (the item), s (its source), cr (its run), qd (the run's design).
_r = table(
    "raw_items", column("id", BigInteger), column("source_id", BigInteger), column("collection_run_id", BigInteger),
    column("published_at", DateTime(timezone=True)), column("language", Text), column("title", Text),
    column("text", Text), column("search_terms_matched", ARRAY(Text)), column("search_vector"),
    column("text_search_config"),
).alias("r")  # fmt: skip
_s = table("sources", column("id", BigInteger), column("name", Text), column("type", Text), column("config", JSONB))
_cr = table("collection_runs", column("id", BigInteger), column("query_design_id", BigInteger))
_qd = table("query_designs", column("id", BigInteger), column("name", Text))
_sources, _runs, _designs = _s.alias("s"), _cr.alias("cr"), _qd.alias("qd")

#: A source's arena: its config's 'arena', else its type (SQL over the alias s; the exported column too).
_ARENA = "coalesce(s.config->>'arena', s.type)"
_arena = literal_column(_ARENA, Text)


def _any_of(name: str, values: tuple, item_type) -> ColumnElement:
    """``= ANY(:name)``: one array parameter, however many values."""
    return any_(bindparam(name, list(values), type_=ARRAY(item_type)))


_KNOWN = {
    "sources": (select(_sources.c.name).where(_sources.c.name == _any_of("values", (), Text)), "source"),
    "arenas": (select(_arena).distinct().select_from(_sources).where(_arena == _any_of("values", (), Text)), "arena"),
    "query_designs": (select(_designs.c.name).where(_designs.c.name == _any_of("values", (), Text)), "query design"),
    "collection_runs": (select(_runs.c.id).where(_runs.c.id == _any_of("values", (), BigInteger)), "collection run"),
}


def validate_filters(conn: Connection, filters: ExportFilters) -> None:
    """Refuse names and ids that do not exist, so a typo is an error and not an empty export."""
    for name, (query, noun) in _KNOWN.items():
        wanted = getattr(filters, name)
        if not wanted:
            continue
        found = {row[0] for row in conn.execute(query, {"values": list(wanted)})}
        missing = [w for w in wanted if w not in found]
        if missing:
            raise ExportFilterError(f"unknown {noun}{'s' if len(missing) > 1 else ''}: {', '.join(map(str, missing))}")


# The item's own text-search configuration, so 'klimaplanen' finds 'klimaplan' in Danish items;
# items that item_features has not reached yet are searched on the fly.
_TEXT_QUERY = """(coalesce(r.search_vector, to_tsvector(coalesce(r.text_search_config, 'simple'::regconfig),
                                       coalesce(r.title, '') || ' ' || coalesce(r.text, '')))
 @@ websearch_to_tsquery(coalesce(r.text_search_config, 'simple'::regconfig), :text_query))"""


def _conditions(filters: ExportFilters) -> list[ColumnElement[bool]]:
    """One condition per filter that is set (every filter narrows the selection)."""
    f = filters
    wanted = {
        "published_from": lambda: _r.c.published_at >= f.published_from,
        "published_to": lambda: _r.c.published_at < f.published_to,
        "sources": lambda: _sources.c.name == _any_of("sources", f.sources, Text),
        "arenas": lambda: _arena == _any_of("arenas", f.arenas, Text),
        "languages": lambda: _r.c.language == _any_of("languages", f.languages, Text),
        "query_designs": lambda: _designs.c.name == _any_of("query_designs", f.query_designs, Text),
        "collection_runs": lambda: _r.c.collection_run_id == _any_of("collection_runs", f.collection_runs, BigInteger),
        "search_terms": lambda: _r.c.search_terms_matched.op("&&")(
            bindparam("search_terms", list(f.search_terms), type_=ARRAY(Text))
        ),
        "text_query": lambda: text(_TEXT_QUERY).bindparams(text_query=f.text_query),
    }
    return [condition() for name, condition in wanted.items() if getattr(f, name) not in (None, ())]


def selection(filters: ExportFilters, *columns: str, ordered: bool = True) -> Select:
    """The exportable items ``filters`` select (never one withdrawn by a takedown), as a SELECT of
    ``columns`` (trusted SQL over the aliases r, s, cr, qd, such as ``columns.py`` writes); ``ordered``:
    oldest first (undated last), ties broken by id, so a file's order is stable."""
    joined = (
        _r.join(_sources, _sources.c.id == _r.c.source_id)
        .join(_runs, _runs.c.id == _r.c.collection_run_id)
        .outerjoin(_designs, _designs.c.id == _runs.c.query_design_id)
    )
    query = (
        select(*(literal_column(c) for c in columns))
        .select_from(joined)
        .where(not_(item_withdrawn(_r.c.id)), *_conditions(filters))
    )
    return query.order_by(_r.c.published_at.asc().nulls_last(), _r.c.id) if ordered else query


def driver_sql(query: Select) -> tuple[str, dict[str, Any]]:
    """``query`` as SQL text with psycopg ``%(name)s`` parameters, for a raw psycopg cursor (COPY, a
    server-side cursor) where SQLAlchemy does not execute it."""
    compiled = query.compile(dialect=psycopg.dialect(), compile_kwargs={"render_postcompile": True})
    return str(compiled), dict(compiled.params)
