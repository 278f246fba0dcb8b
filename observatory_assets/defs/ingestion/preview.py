"""What a person sees first of a loaded collection run: its first items, as the run's materialization shows them."""

from __future__ import annotations

from sqlalchemy import Connection, text

_RUN_PREVIEW = text(
    """
SELECT r.id, s.name AS source, r.published_at, left(r.title, 80) AS title, r.language
  FROM raw_items r JOIN sources s ON s.id = r.source_id
 WHERE r.collection_run_id = :run_id ORDER BY r.id LIMIT :limit
"""
)


def run_preview(conn: Connection, run_id: int, limit: int = 10) -> list[dict[str, str]]:
    """The first ``limit`` items of collection run ``run_id`` (id, source, publication time, the title's
    first 80 characters, language), every value as text ('' for none), for a Markdown table."""
    rows = conn.execute(_RUN_PREVIEW, {"run_id": run_id, "limit": limit}).mappings().all()
    return [{k: (str(v) if v is not None else "") for k, v in row.items()} for row in rows]
