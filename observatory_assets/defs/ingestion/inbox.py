"""The inbox: a file dropped under ``inbox/<source>/`` in object storage becomes a collection run.

The format comes from the file's extension. Taking an object (:func:`take_inbox_object`) is
idempotent and loses nothing, in three steps that each survive a crash and a retry:

1. find or create the collection run for the object's key and ETag (its ``origin``);
2. move the object to ``inbox/processed/<UTC date>/<source>/<ETag>-<name>``: copy, verify the copy's
   size and SHA-256 against the original, then delete the original;
3. collect the run from the processed copy (which stays, so a failed run can be retried).

A file in an unknown format, or dropped outside a source folder, is moved all the same and becomes a
failed run whose error says why: nothing is skipped in silence.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import PurePosixPath

from sqlalchemy import Engine, text

from observatory_assets.defs.ingestion.collect import SourceRequest, create_collection_run, run_collection
from observatory_assets.lib.statuses import CollectionRunStatus
from resources.object_store import ObjectEntry, ObjectStore, read_hashed

INBOX = "inbox/"
PROCESSED = "inbox/processed/"
#: The payload format of each file extension the inbox understands.
FORMATS_BY_EXTENSION = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
    ".rss": "rss",
    ".xml": "rss",
    ".atom": "atom",
}


@dataclass(frozen=True)
class InboxOutcome:
    """What taking one inbox object did: its run, that run's status, where the object now lies, and
    why it could not be collected (None when it was)."""

    collection_run_id: int
    status: CollectionRunStatus
    processed_key: str
    error: str | None = None


def waiting_objects(store: ObjectStore) -> Iterator[ObjectEntry]:
    """The objects in the inbox that are not processed yet, by key."""
    for entry in store.entries(INBOX):
        if not entry.key.startswith(PROCESSED):
            yield entry


def origin_of(key: str, etag: str) -> str:
    """What identifies one drop: the key and the ETag of the object dropped there."""
    return f"{key}#{etag}"


def source_of(key: str) -> str | None:
    """The source a dropped object belongs to: the folder right under ``inbox/`` (None at the top)."""
    parts = key[len(INBOX) :].split("/")
    return parts[0] if len(parts) > 1 and parts[0] else None


def processed_key(key: str, etag: str, day: date) -> str:
    """Where a taken object is kept: under the day it was taken, its ETag in the name so that two
    drops of the same name never overwrite each other."""
    source = source_of(key) or "_no_source"
    tag = re.sub(r"[^A-Za-z0-9]+", "", etag)[:32] or "none"
    return f"{PROCESSED}{day.isoformat()}/{source}/{tag}-{PurePosixPath(key).name}"


def _why_not_collectable(key: str) -> str | None:
    if source_of(key) is None:
        return "inbox_no_source: put the file in a source folder, inbox/<source>/<file>"
    extension = PurePosixPath(key).suffix.lower()
    if extension not in FORMATS_BY_EXTENSION:
        known = ", ".join(FORMATS_BY_EXTENSION)
        return f"inbox_unknown_format: {extension or 'no extension'} is not one of {known}"
    return None


def _run_for_origin(engine: Engine, origin: str) -> tuple[int, str, str] | None:
    """(run id, status, processed key) of the run already made from this drop, if any."""
    with engine.connect() as conn:
        row = conn.execute(
            text(
                """
                SELECT id, status, payloads -> 0 ->> 'object_key' AS object_key FROM collection_runs
                 WHERE payloads @> CAST(:origin AS jsonb) ORDER BY id LIMIT 1
                """
            ),
            {"origin": json.dumps([{"origin": origin}])},
        ).one_or_none()
    return None if row is None else (row.id, CollectionRunStatus(row.status), row.object_key)


def _record_refused(engine: Engine, source: str | None, kept_at: str, origin: str, reason: str) -> int:
    """A failed run for a drop that cannot be collected: the reason is its error, the object is kept."""
    payloads = [{"name": source, "fmt": None, "object_key": kept_at, "origin": origin}]
    with engine.begin() as conn:
        return conn.execute(
            text(
                """
                INSERT INTO collection_runs (status, payloads, error, completed_at)
                VALUES (:failed, CAST(:payloads AS jsonb), :error, clock_timestamp()) RETURNING id
                """
            ),
            {"failed": CollectionRunStatus.FAILED, "payloads": json.dumps(payloads), "error": reason},
        ).scalar_one()


def move_object(store: ObjectStore, source: str, target: str) -> None:
    """Move an object: copy, verify the copy byte for byte (size and SHA-256), then delete the
    original. A copy that does not match is removed and the original stays."""
    if store.size(source) is None:
        if store.size(target) is None:
            raise FileNotFoundError(f"inbox object {source} is gone and was never moved to {target}")
        return  # moved by an earlier attempt that stopped before returning
    store.copy(source, target)
    if read_hashed(store, target) != read_hashed(store, source):
        store.delete(target)
        raise OSError(f"the copy of {source} at {target} differs from the original; the original is kept")
    store.delete(source)


def take_inbox_object(engine: Engine, store: ObjectStore, key: str, etag: str, today: date) -> InboxOutcome:
    """Turn the inbox object ``key`` (as of ``etag``) into a collection run, and move it to the
    processed folder; idempotent, see the module docstring."""
    origin = origin_of(key, etag)
    reason = _why_not_collectable(key)
    existing = _run_for_origin(engine, origin)
    if existing is not None:
        run_id, status, kept_at = existing
    elif reason is not None:
        kept_at = processed_key(key, etag, today)
        run_id, status = _record_refused(engine, source_of(key), kept_at, origin, reason), CollectionRunStatus.FAILED
    else:
        kept_at = processed_key(key, etag, today)
        fmt = FORMATS_BY_EXTENSION[PurePosixPath(key).suffix.lower()]
        request = SourceRequest(source_of(key), fmt, object_key=kept_at, origin=origin)
        run_id, status = create_collection_run(engine, [request]), CollectionRunStatus.PENDING
    move_object(store, key, kept_at)
    if reason is None and status in (CollectionRunStatus.PENDING, CollectionRunStatus.FAILED):
        run_collection(engine, store, run_id)  # a failure is recorded on the run and raised
        status = CollectionRunStatus.COMPLETED
    return InboxOutcome(run_id, status, kept_at, reason)
