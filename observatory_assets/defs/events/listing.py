"""What a person reads about events: the largest ones with their mood, the counts, the busiest day."""

from __future__ import annotations

from sqlalchemy import Connection, text

_LARGEST = """
SELECT e.id, e.item_count, e.source_count, e.first_seen_at, e.last_seen_at, e.title,
       s.mean_score, s.negative, s.neutral, s.positive
  FROM events e LEFT JOIN event_sentiment s ON s.event_id = e.id
 ORDER BY e.item_count DESC, e.last_seen_at DESC
 LIMIT :limit
"""
_BUSIEST_ENDED_DAY = """
SELECT (item_time AT TIME ZONE 'UTC')::date AS day FROM event_items
 WHERE item_time < date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
 GROUP BY 1 ORDER BY count(DISTINCT event_id) DESC, 1 DESC
 LIMIT 1
"""


def largest_events(conn: Connection, limit: int) -> list:
    """The ``limit`` events with the most items (the latest first among equals), with their sentiment balance."""
    return conn.execute(text(_LARGEST), {"limit": limit}).all()


def event_counts(conn: Connection) -> tuple[int, int]:
    """(how many events there are, the items of the largest)."""
    count, largest = conn.execute(text("SELECT count(*), coalesce(max(item_count), 0) FROM events")).one()
    return count, largest


def busiest_ended_day(conn: Connection) -> str | None:
    """The ended UTC day (ISO) whose items belong to the most events; None before any event."""
    day = conn.execute(text(_BUSIEST_ENDED_DAY)).scalar_one_or_none()
    return day.isoformat() if day else None
