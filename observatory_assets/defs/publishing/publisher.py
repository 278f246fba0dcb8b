"""Idempotent publishing of one day's digest to one target, recorded in ``publish_records``.

``publish_records`` holds one row per (target, day). The digest is rendered from the database (items
withdrawn by takedowns left out) and its content hash decides:

- same hash as the record and the same visibility: a recorded skip, nothing is sent;
- otherwise the target is brought in line (Ghost looks the post up by slug or tag before any create,
  so a run killed after Ghost's create and before our commit finds its post on retry), then the record,
  the items it shows and the audit row commit together.

A record removed by a takedown is never published again (a recorded skip), so a removed item cannot
come back under that day, and an empty day is not published at all. A day is processed under an
advisory lock, so a scheduled publish and a takedown never race on one record.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date

from sqlalchemy import Connection, Engine, text

from observatory_assets.defs.publishing.digest import (
    SOURCE_ROWS,
    content_hash,
    load_digest,
    render_fragment,
    source_fingerprint,
    source_parameters,
)
from observatory_assets.defs.publishing.targets import Target
from observatory_assets.lib.audit import SKIPPED, record_audit
from observatory_assets.lib.statuses import PublishRecordStatus
from resources.object_store import ObjectStore

CREATED, UPDATED, UNCHANGED, REMOVED, EMPTY = "created", "updated", "unchanged", "removed", "empty"


@dataclass
class PublishOutcome:
    """What publishing one day to one target did."""

    target: str
    day: date
    action: str  # created | updated | unchanged | removed (skipped: taken down) | empty (skipped)
    record_id: int | None = None
    external_id: str | None = None
    url: str | None = None
    content_hash: str | None = None
    live: bool = False
    events: int = 0
    items: int = 0
    trends: int = 0
    seconds: float = 0.0
    details: dict = field(default_factory=dict)

    @property
    def skipped(self) -> bool:
        return self.action in (UNCHANGED, REMOVED, EMPTY)


# The day's record (if any) beside the fingerprint of the day's sources: one round trip.
_RECORD_AND_SOURCES = f"""
WITH sources AS ({SOURCE_ROWS})
SELECT s.rows_md5, s.trend_names, r.id, r.external_id, r.content_hash, r.source_fingerprint, r.status, r.live,
       r.url, r.event_count, r.item_count
  FROM sources s LEFT JOIN publish_records r ON r.target = :target AND r.digest_date = :day
"""

_UPSERT = """
INSERT INTO publish_records (target, external_id, digest_date, content_hash, source_fingerprint, title, url,
                             body_html, live, event_count, item_count)
VALUES (:target, :external_id, :day, :hash, :fingerprint, :title, :url, :html, :live, :events, :items)
ON CONFLICT (target, digest_date) DO UPDATE
   SET external_id = EXCLUDED.external_id, content_hash = EXCLUDED.content_hash,
       source_fingerprint = EXCLUDED.source_fingerprint, title = EXCLUDED.title, url = EXCLUDED.url,
       body_html = EXCLUDED.body_html, live = EXCLUDED.live, event_count = EXCLUDED.event_count,
       item_count = EXCLUDED.item_count, updated_at = clock_timestamp()
RETURNING id
"""


@contextmanager
def day_lock(engine: Engine, target: str, day: date) -> Iterator[Connection]:
    """Serialize everything that changes one (target, day) record, across processes. Yields the connection
    that holds the lock, for the work done under it: its reads may share the transaction that took the lock
    (each statement sees what others committed before it), and what the caller leaves open is rolled back
    on an error and otherwise ends with the unlock."""
    key = {"k": f"publish:{target}:{day.isoformat()}"}
    with engine.connect() as conn:
        conn.execute(text("SELECT pg_advisory_lock(hashtext(:k))"), key)
        try:
            yield conn
        except BaseException:
            conn.rollback()
            raise
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(hashtext(:k))"), key)
            conn.commit()


def _replace_items(conn: Connection, record_id: int, item_ids: list[int]) -> None:
    conn.execute(text("DELETE FROM publish_record_items WHERE record_id = :id"), {"id": record_id})
    conn.execute(
        text("INSERT INTO publish_record_items (record_id, item_id) SELECT :id, unnest(CAST(:items AS bigint[]))"),
        {"id": record_id, "items": item_ids},
    )


def publish_day(
    engine: Engine, store: ObjectStore, target: Target, day: date, actor: str, reason: str = "publish"
) -> PublishOutcome:
    """Bring ``target`` in line with the digest of ``day``; idempotent, safe to kill and retry.
    ``reason`` says why in the audit row (``publish``, or the takedown stage that re-rendered it).

    A record whose source fingerprint (what the digest is rendered from) is unchanged is a recorded skip
    without loading or rendering the digest; otherwise the rendered content hash decides."""
    started = time.perf_counter()
    charts = store if target.inline_charts else None
    with day_lock(engine, target.kind, day) as conn:
        row = conn.execute(text(_RECORD_AND_SOURCES), {**source_parameters(day), "target": target.kind}).one()
        record = row if row.id is not None else None
        fingerprint = source_fingerprint(row.rows_md5, row.trend_names, charts)
        outcome = PublishOutcome(target.kind, day, UNCHANGED)
        if record is not None:
            outcome.record_id, outcome.external_id, outcome.url = record.id, record.external_id, record.url
        if record is not None and record.status == PublishRecordStatus.REMOVED:
            outcome.action = REMOVED
        elif record is not None and record.source_fingerprint == fingerprint:
            outcome.content_hash, outcome.live = record.content_hash, record.live
            outcome.events, outcome.items = record.event_count, record.item_count
        else:
            conn.commit()
            _publish_rendered(conn, store, target, day, record, fingerprint, charts, outcome, actor, reason, started)
        if outcome.skipped:  # recorded in the transaction that read the record, committed with the unlock
            outcome.seconds = time.perf_counter() - started
            _audit(conn, actor, outcome, reason)
        target.finish(conn)
    return outcome


def _publish_rendered(
    conn: Connection, store: ObjectStore, target: Target, day: date, record, fingerprint: str,
    charts: ObjectStore | None, outcome: PublishOutcome, actor: str, reason: str, started: float,
) -> None:  # fmt: skip
    """Load and render the digest; send it unless the target already shows this content; record it."""
    digest = load_digest(conn, day, charts)
    conn.rollback()
    fragment = render_fragment(digest)
    digest_hash, live = content_hash(fragment), not digest.empty
    outcome.content_hash, outcome.live = digest_hash, live
    outcome.events, outcome.items, outcome.trends = len(digest.events), len(digest.item_ids), len(digest.trends)
    if record is None and not live:
        outcome.action = EMPTY
        return
    if record is not None and record.content_hash == digest_hash and record.live == live:
        with conn.begin():  # the same content from changed sources: remember them, so the next run need not render
            conn.execute(
                text("UPDATE publish_records SET source_fingerprint = :f WHERE id = :id"),
                {"f": fingerprint, "id": record.id},
            )
        return
    placement = target.put(record.external_id if record else None, day, digest.title, fragment, digest_hash, live)
    with conn.begin():
        outcome.record_id = conn.execute(
            text(_UPSERT),
            {"target": target.kind, "external_id": placement.external_id, "day": day, "hash": digest_hash,
             "fingerprint": fingerprint, "title": digest.title, "url": placement.url, "html": fragment,
             "live": live, "events": len(digest.events), "items": len(digest.item_ids)},
        ).scalar_one()  # fmt: skip
        _replace_items(conn, outcome.record_id, digest.item_ids)
        outcome.action = CREATED if record is None else UPDATED
        outcome.external_id, outcome.url = placement.external_id, placement.url
        outcome.seconds = time.perf_counter() - started
        _audit(conn, actor, outcome, reason)


def _audit(conn: Connection, actor: str, outcome: PublishOutcome, reason: str) -> None:
    action = {CREATED: "publish", UPDATED: "update"}.get(outcome.action, "skip")
    record_audit(
        conn, actor, action, "publish_record", outcome.record_id, target=outcome.target,
        outcome=SKIPPED if outcome.skipped else "ok",
        details={"day": outcome.day.isoformat(), "result": outcome.action, "reason": reason,
                 "content_hash": outcome.content_hash, "external_id": outcome.external_id, "live": outcome.live,
                 "events": outcome.events, "items": outcome.items, "seconds": round(outcome.seconds, 3)},
    )  # fmt: skip


def delete_record(engine: Engine, target: Target, record_id: int, actor: str, request_id: int) -> bool:
    """Stage 2 for one record left empty by a takedown: delete its content from the target (a 404 counts
    as done) and mark it ``removed``. Returns whether the target still had it."""
    with engine.connect() as conn:
        record = conn.execute(
            text("SELECT external_id, digest_date FROM publish_records WHERE id = :id"), {"id": record_id}
        ).one()
    with day_lock(engine, target.kind, record.digest_date) as lock:
        existed = target.delete(record.external_id)
        with engine.begin() as conn:
            conn.execute(
                text("UPDATE publish_records SET status = :removed, live = false, removed_at = clock_timestamp(), "
                     "updated_at = clock_timestamp() WHERE id = :id"),
                {"id": record_id, "removed": PublishRecordStatus.REMOVED},
            )  # fmt: skip
            record_audit(
                conn, actor, "takedown_delete", "publish_record", record_id, target=target.kind,
                details={"request_id": request_id, "external_id": record.external_id, "was_present": existed},
            )  # fmt: skip
        target.finish(lock)
    return existed


def publish_record(conn: Connection, target: str, day: date) -> dict | None:
    """The record of ``day``'s digest on ``target`` (id, status, live, external id, URL, content hash);
    None when nothing was published for that day there."""
    row = conn.execute(
        text("SELECT id, status, live, external_id, url, content_hash FROM publish_records "
             "WHERE target = :t AND digest_date = :d"),
        {"t": target, "d": day},
    ).mappings().one_or_none()  # fmt: skip
    return None if row is None else dict(row)
