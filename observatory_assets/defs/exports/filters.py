"""Export filters: what a researcher selects, validated before anything is written."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, fields
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import Connection

from observatory_assets.lib.takedowns import item_withdrawn_sql

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


_ARENA = "coalesce(s.config->>'arena', s.type)"

_KNOWN = {
    "sources": ("SELECT name FROM sources WHERE name = ANY(%(values)s)", "source"),
    "arenas": (f"SELECT DISTINCT {_ARENA} FROM sources s WHERE {_ARENA} = ANY(%(values)s)", "arena"),
    "query_designs": ("SELECT name FROM query_designs WHERE name = ANY(%(values)s)", "query design"),
    "collection_runs": ("SELECT id FROM collection_runs WHERE id = ANY(%(values)s)", "collection run"),
}


def validate_filters(conn: Connection, filters: ExportFilters) -> None:
    """Refuse names and ids that do not exist, so a typo is an error and not an empty export."""
    for name, (query, noun) in _KNOWN.items():
        wanted = getattr(filters, name)
        if not wanted:
            continue
        found = {row[0] for row in conn.exec_driver_sql(query, {"values": list(wanted)})}
        missing = [w for w in wanted if w not in found]
        if missing:
            raise ExportFilterError(f"unknown {noun}{'s' if len(missing) > 1 else ''}: {', '.join(map(str, missing))}")


SELECTION_FROM = """
  FROM raw_items r
  JOIN sources s ON s.id = r.source_id
  JOIN collection_runs cr ON cr.id = r.collection_run_id
  LEFT JOIN query_designs qd ON qd.id = cr.query_design_id
"""
#: Exports list items oldest first (undated last), ties broken by id, so a file's order is stable.
SELECTION_ORDER = "ORDER BY r.published_at NULLS LAST, r.id"

# The item's own text-search configuration, so 'klimaplanen' finds 'klimaplan' in Danish items;
# items that item_features has not reached yet are searched on the fly.
_TEXT_QUERY = (
    "coalesce(r.search_vector, to_tsvector(coalesce(r.text_search_config, 'simple'::regconfig), "
    "coalesce(r.title, '') || ' ' || coalesce(r.text, ''))) "
    "@@ websearch_to_tsquery(coalesce(r.text_search_config, 'simple'::regconfig), %(text_query)s)"
)


def selection_where(filters: ExportFilters) -> tuple[str, dict[str, Any]]:
    """The WHERE clause (psycopg ``%(name)s`` parameters) selecting the exportable items."""
    clauses = [f"NOT {item_withdrawn_sql('r.id')}"]
    params: dict[str, Any] = {}
    conditions = {
        "published_from": "r.published_at >= %(published_from)s",
        "published_to": "r.published_at < %(published_to)s",
        "sources": "s.name = ANY(%(sources)s)",
        "arenas": f"{_ARENA} = ANY(%(arenas)s)",
        "languages": "r.language = ANY(%(languages)s)",
        "query_designs": "qd.name = ANY(%(query_designs)s)",
        "collection_runs": "r.collection_run_id = ANY(%(collection_runs)s)",
        "search_terms": "r.search_terms_matched && %(search_terms)s::text[]",
        "text_query": _TEXT_QUERY,
    }
    for name, clause in conditions.items():
        value = getattr(filters, name)
        if value not in (None, ()):
            clauses.append(clause)
            params[name] = list(value) if isinstance(value, tuple) else value
    return " AND ".join(clauses), params
