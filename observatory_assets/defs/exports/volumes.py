"""Daily volume statistics as an export: what ``volume_stats`` counted for the chosen query designs.

A row is one UTC day's items of one design along one dimension: ``day``, ``query_design``, ``dimension``
(platform, arena, source, language, term, sentiment, actor), ``value`` (the platform, the term, the actor,
…) and ``items``, oldest day first, then by design and dimension, the largest counts first. The date
range is the content export's: a day is exported when it overlaps ``[published_from, published_to)``
(UTC). The figures are those of the latest ``volume_stats`` materialization of each day.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from observatory_assets.defs.exports.columns import Column, arrow_schema, select_list
from observatory_assets.defs.exports.filters import ExportFilterError, ExportFilters

VOLUME_FORMATS = ("csv", "parquet")
VOLUME_COLUMNS: tuple[Column, ...] = (
    Column("day", "v.day", "date", 12),
    Column("query_design", "qd.name", "text", 18),
    Column("dimension", "v.dimension", "text", 12),
    Column("value", "v.value", "text", 30),
    Column("items", "v.items", "count", 10),
)
#: The filters a volume export understands: the rest select items, which volume statistics no longer hold.
VOLUME_FILTERS = ("published_from", "published_to", "query_designs")


def check_volume_filters(filters: ExportFilters) -> None:
    """At least one query design and nothing but the date range besides; else :class:`ExportFilterError`."""
    extra = [name for name, value in filters.as_json().items() if name not in VOLUME_FILTERS]
    if extra:
        raise ExportFilterError(
            f"volume exports select by query design and date range only, not by {', '.join(sorted(extra))}"
        )
    if not filters.query_designs:
        raise ExportFilterError("volume exports need at least one query design")


def volume_schema() -> pa.Schema:
    """The Parquet schema: day as date32, names as strings, items as int64."""
    return arrow_schema(VOLUME_COLUMNS)


def volume_query(filters: ExportFilters, fmt: str) -> tuple[str, dict[str, Any]]:
    """The SELECT of a volume export in ``fmt`` with its psycopg parameters."""
    conditions = ["qd.name = ANY(%(query_designs)s)"]
    if filters.published_from:
        conditions.append("v.day >= CAST(%(published_from)s AT TIME ZONE 'UTC' AS date)")
    if filters.published_to:
        conditions.append("CAST(v.day AS timestamp) AT TIME ZONE 'UTC' < %(published_to)s")
    query = f"""
        SELECT {select_list(VOLUME_COLUMNS, fmt)}
          FROM volume_stats v JOIN query_designs qd ON qd.id = v.query_design_id
         WHERE {" AND ".join(conditions)}
         ORDER BY v.day, qd.name, v.dimension, v.items DESC, v.value
    """
    params = {
        "query_designs": list(filters.query_designs),
        "published_from": filters.published_from,
        "published_to": filters.published_to,
    }
    return query, params
