"""What one answer means for its source, written once per kind of answer.

A poll cycle's answers are recorded in one transaction: each source's validators, status, next check and
back-off (:func:`_not_requested`, :func:`_failed`, :func:`_not_modified`, :func:`_answered`: one function
per kind of answer), the fetch history, a host's ``Retry-After``, and the audited 301/308 move and 410
deactivation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, text

from observatory_assets.defs.collection.catalog import interval_seconds
from observatory_assets.defs.collection.fetcher import FetchOutcome, auto_interval, next_check
from observatory_assets.lib.audit import record_audit

ACTOR = "poller"


@dataclass(frozen=True)
class _Schedule:
    """What a source's next check depends on besides its answer: its ``poll`` setting, the floor learned
    from its last body, and how many entries it delivered in the week before now (over how many weeks known)."""

    poll: str
    min_interval_s: int | None
    entries_last_week: int
    weeks_known: float

    def due(self, now: datetime, floor: int | None, error_count: int, scheduled: datetime | None) -> datetime:
        return next_check(
            now,
            interval_seconds(self.poll),
            auto_interval(self.entries_last_week, self.weeks_known),
            floor or None,
            error_count,
            scheduled,
        )


def _schedules(conn: Connection, source_ids: list[int], now: datetime) -> dict[int, _Schedule]:
    rows = conn.execute(
        text(
            """
            SELECT s.id, s.poll, s.min_interval_s,
                   (SELECT count(*) FROM raw_items r
                     WHERE r.source_id = s.id AND r.published_at > CAST(:now AS timestamptz) - interval '7 days'
                       AND r.published_at <= :now) AS entries,
                   extract(epoch FROM CAST(:now AS timestamptz) - s.created_at) / 604800.0 AS weeks
              FROM sources s WHERE s.id = ANY(CAST(:ids AS bigint[]))
            """
        ),
        {"ids": source_ids, "now": now},
    )
    return {row.id: _Schedule(row.poll, row.min_interval_s, row.entries, float(row.weeks)) for row in rows}


def _source_row(outcome: FetchOutcome, now: datetime, error_count: int, due: datetime, floor: int | None) -> dict:
    """The ``sources`` row an answer leaves: validators kept from the last success unless it succeeded,
    a 301/308's new URL, a 410's deactivation."""
    source, failed = outcome.source, outcome.error is not None
    return {
        "id": source.id,
        "status": outcome.status,
        "etag": source.etag if failed else outcome.etag,
        "last_modified": source.last_modified if failed else outcome.last_modified,
        "error_count": error_count,
        "error": outcome.error,
        "next": due,
        "min_interval": floor or None,
        "url": outcome.moved_to or source.url,
        "active": not outcome.gone,
        "now": now,
        "fetched": outcome.changed,
    }


def _not_requested(outcome: FetchOutcome, schedule: _Schedule, now: datetime) -> dict:
    """Not asked, its host asked to wait: due when the host said, its error count unchanged."""
    return _source_row(outcome, now, outcome.source.error_count, outcome.retry_after, outcome.min_interval_s)


def _failed(outcome: FetchOutcome, schedule: _Schedule, now: datetime) -> dict:
    """An error (network, HTTP, a cap, a body that cannot be read): backed off, never before a Retry-After."""
    error_count = outcome.source.error_count + 1
    due = schedule.due(now, outcome.min_interval_s, error_count, outcome.source.scheduled)
    if outcome.retry_after is not None:
        due = max(due, outcome.retry_after)
    return _source_row(outcome, now, error_count, due, outcome.min_interval_s)


def _not_modified(outcome: FetchOutcome, schedule: _Schedule, now: datetime) -> dict:
    """A 304 carries no body, so no ``<ttl>``: the floor learned from the last body still holds."""
    floor = max(outcome.min_interval_s or 0, schedule.min_interval_s or 0)
    return _source_row(outcome, now, 0, schedule.due(now, floor, 0, outcome.source.scheduled), floor)


def _answered(outcome: FetchOutcome, schedule: _Schedule, now: datetime) -> dict:
    """A body (changed), or a success without one: on schedule, under the floor the answer sets."""
    return _source_row(
        outcome, now, 0, schedule.due(now, outcome.min_interval_s, 0, outcome.source.scheduled), outcome.min_interval_s
    )


def _answer_row(outcome: FetchOutcome, schedule: _Schedule, now: datetime) -> dict:
    if not outcome.requested and outcome.retry_after is not None:
        return _not_requested(outcome, schedule, now)
    if outcome.error is not None:
        return _failed(outcome, schedule, now)
    if outcome.not_modified:
        return _not_modified(outcome, schedule, now)
    return _answered(outcome, schedule, now)


def _fetch_row(outcome: FetchOutcome, owner: dict[int, int], now: datetime) -> dict:
    """The fetch history's row of a request sent."""
    return {
        "source": outcome.source.id,
        "status": outcome.status,
        "items": outcome.records if outcome.changed else None,
        "bytes": outcome.size if outcome.changed else None,
        "run": owner.get(outcome.source.id) if outcome.changed else None,
        "error": outcome.error,
        "now": now,
    }


def _host_asked_to_wait(conn: Connection, outcome: FetchOutcome) -> None:
    conn.execute(
        text(
            """
            INSERT INTO polling_hosts (host, retry_after_until) VALUES (:host, :until)
            ON CONFLICT (host) DO UPDATE SET retry_after_until = greatest(polling_hosts.retry_after_until, EXCLUDED.retry_after_until)
            """
        ),
        {"host": outcome.source.host, "until": outcome.retry_after},
    )


def _moved(conn: Connection, outcome: FetchOutcome) -> None:
    source = outcome.source
    details = {"status": outcome.status, "from": source.url, "to": outcome.moved_to}
    record_audit(conn, ACTOR, "source.moved", "source", source.id, source.name, details=details)


def _gone(conn: Connection, outcome: FetchOutcome) -> None:
    source = outcome.source
    record_audit(conn, ACTOR, "source.deactivated", "source", source.id, source.name, details={"status": 410})


#: Every answer's ``sources`` row (:func:`_source_row`), written in one set-based statement.
_RECORD_SOURCES = """
UPDATE sources s
   SET last_status = a.status, etag = a.etag, last_modified = a.last_modified, error_count = a.error_count,
       last_error = a.error, last_checked_at = a.now, next_check_at = a.next, min_interval_s = a.min_interval,
       url = a.url, active = s.active AND a.active,
       last_fetched_at = CASE WHEN a.fetched THEN a.now ELSE s.last_fetched_at END
  FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS a (
       id bigint, status integer, etag text, last_modified text, error_count integer, error text, next timestamptz,
       min_interval integer, url text, active boolean, now timestamptz, fetched boolean)
 WHERE s.id = a.id
"""
#: The fetch history's rows (:func:`_fetch_row`), in one statement.
_RECORD_FETCHES = """
INSERT INTO source_fetches (source_id, fetched_at, status, items, bytes, collection_run_id, error)
SELECT source, now, status, items, bytes, run, error
  FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS f (
       source bigint, now timestamptz, status integer, items integer, bytes bigint, run bigint, error text)
"""


def record_answers(
    conn: Connection, outcomes: list[FetchOutcome], owner: dict[int, int], now: datetime
) -> tuple[list[str], list[str]]:
    """Write every answer on its source and into the fetch history (``owner``: the run that holds each
    changed source's payload), hosts' Retry-After, moves and 410s; the names of the sources that moved and
    of those that are gone."""
    schedules = _schedules(conn, [o.source.id for o in outcomes], now)
    for outcome in outcomes:
        if outcome.retry_after is not None and outcome.requested:
            _host_asked_to_wait(conn, outcome)
        if outcome.moved_to:
            _moved(conn, outcome)
        if outcome.gone:
            _gone(conn, outcome)
    rows = [_answer_row(outcome, schedules[outcome.source.id], now) for outcome in outcomes]
    conn.execute(text(_RECORD_SOURCES), {"rows": json.dumps(rows, default=datetime.isoformat)})
    fetches = [_fetch_row(outcome, owner, now) for outcome in outcomes if outcome.requested]
    if fetches:
        conn.execute(text(_RECORD_FETCHES), {"rows": json.dumps(fetches, default=datetime.isoformat)})
    return [o.source.name for o in outcomes if o.moved_to], [o.source.name for o in outcomes if o.gone]
