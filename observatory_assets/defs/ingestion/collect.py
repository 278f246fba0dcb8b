"""Collection runs: what a collector delivered, kept unchanged so any run can be replayed.

A collection run fetches one or more sources (a feed URL, a feed file, a JSONL or
CSV file), stores every payload byte for byte in object storage under
``collection_runs/<run id>/``, counts the rows each payload delivers and moves
the run ``pending → running → completed`` (or ``failed`` with the error). The
``collection_run_sensor`` then starts ingestion for each completed run.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import BinaryIO

from sqlalchemy import Connection, Engine, text

from observatory_assets.defs.ingestion.records import ARENA_FORMATS, FORMATS, count_records
from observatory_assets.lib.errors import failure_message
from observatory_assets.lib.outbox import COLLECTION_FAILED, emit
from observatory_assets.lib.statuses import CollectionRunStatus
from resources.files import OutsideRoots, is_below, open_below
from resources.object_store import ObjectStore, StoredObject, staged_upload
from resources.outbound import OutboundClient
from resources.settings import platform_settings

MAX_REDIRECTS = 5
_EXTENSIONS = {"rss": "xml", "atom": "xml", "jsonl": "jsonl", "csv": "csv"}


@dataclass(frozen=True)
class SourceRequest:
    """One source to collect: a ``path``, ``url`` or object-storage ``object_key`` read as ``fmt``,
    filed under source ``name``. ``origin`` says where a dropped object came from (the inbox key and
    its ETag), so the same drop never becomes two runs."""

    name: str
    fmt: str
    path: str | None = None
    url: str | None = None
    object_key: str | None = None
    origin: str | None = None

    def __post_init__(self) -> None:
        if self.fmt not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}, not {self.fmt!r}")
        if sum(where is not None for where in (self.path, self.url, self.object_key)) != 1:
            raise ValueError("give exactly one of a file path or a URL")
        if not self.name.strip():
            raise ValueError("a source needs a name")


_REQUEST_FIELDS = {field.name for field in fields(SourceRequest)}


def guess_format(location: str) -> str:
    """The payload format implied by a file name or URL (``.jsonl``, ``.csv``, ``.atom``, else RSS)."""
    lowered = location.lower().split("?")[0]
    for suffix, fmt in ((".jsonl", "jsonl"), (".ndjson", "jsonl"), (".csv", "csv"), (".atom", "atom")):
        if lowered.endswith(suffix):
            return fmt
    return "rss"


def ensure_source(conn: Connection, name: str, fmt: str, url: str | None = None) -> int:
    """The id of source ``name``, registering it on first sight."""
    return conn.execute(
        text(
            """
            INSERT INTO sources (name, type, url) VALUES (:name, :type, :url)
            ON CONFLICT (name) DO UPDATE SET last_fetched_at = now()
            RETURNING id
            """
        ),
        {"name": name, "type": fmt, "url": url},
    ).scalar_one()


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:60] or "source"


class PathRefused(ValueError):
    """A local file outside the roots files may be collected from."""


def collectable_path(path: str | Path) -> Path:
    """``path`` resolved (symlinks followed), if it lies under a root of ``OBSERVATORY_COLLECT_ROOTS``
    (default: one dedicated directory, ``<home>/collect``); else :class:`PathRefused`."""
    resolved = Path(path).expanduser().resolve()
    if not is_below(resolved, platform_settings().collect_root_dirs):
        raise PathRefused(f"{path} is outside the directories files may be collected from (OBSERVATORY_COLLECT_ROOTS)")
    return resolved


def open_collectable(path: str | Path) -> BinaryIO:
    """``path`` opened for reading, checked again at the open itself: a file swapped for a symbolic link
    (or a directory for one leading out of the roots) after the check is refused, never read."""
    try:
        return open_below(collectable_path(path), platform_settings().collect_root_dirs)
    except OutsideRoots as error:
        raise PathRefused(f"{error} (OBSERVATORY_COLLECT_ROOTS)") from None


def _store_payload(store: ObjectStore, key: str, request: SourceRequest, client: OutboundClient) -> StoredObject:
    """Stream one source's payload into object storage under ``key``: an object already in storage, a
    file within the roots, or a URL through the guarded outbound client (capped)."""
    if request.object_key is not None:
        with store.open(request.object_key) as stream:
            return store.put_stream(key, stream)
    if request.path is not None:
        with open_collectable(request.path) as stream:
            return store.put_stream(key, stream)
    with client.stream("GET", request.url, max_redirects=MAX_REDIRECTS) as response:
        if response.status_code != 200:
            raise ValueError(f"the server answered HTTP {response.status_code}")
        with staged_upload(store, key) as staged:
            for chunk in response.iter_bytes():
                staged.write(chunk)
    return staged.stored


def create_collection_run(engine: Engine, requests: list[SourceRequest], query_design_id: int | None = None) -> int:
    """Register a pending collection run for ``requests`` and return its id (a file outside the collect
    roots is refused before any run exists)."""
    for request in requests:
        if request.path is not None:
            collectable_path(request.path)
    with engine.begin() as conn:
        return conn.execute(
            text(
                """
                INSERT INTO collection_runs (query_design_id, payloads, payload_prefix)
                VALUES (:qd, CAST(:payloads AS jsonb), NULL) RETURNING id
                """
            ),
            {"qd": query_design_id, "payloads": json.dumps([asdict(r) for r in requests])},
        ).scalar_one()


def run_collection(engine: Engine, store: ObjectStore, run_id: int) -> dict:
    """Fetch every source of a pending or failed run, store the payloads and complete it.

    Returns the completed run's manifest. On any error the run is marked ``failed``
    with the error and the exception propagates; calling again retries it.
    """
    with engine.begin() as conn:
        row = conn.execute(
            text(
                """
                UPDATE collection_runs SET status = :running, started_at = clock_timestamp(), error = NULL
                WHERE id = :id AND status IN (:pending, :failed) RETURNING payloads
                """
            ),
            {
                "id": run_id,
                "running": CollectionRunStatus.RUNNING,
                "pending": CollectionRunStatus.PENDING,
                "failed": CollectionRunStatus.FAILED,
            },
        ).one_or_none()
    if row is None:
        raise ValueError(f"collection run {run_id} does not exist or is not pending/failed")
    prefix = f"collection_runs/{run_id}/"
    try:
        arenas = sorted({p["name"] for p in row[0] if p.get("fmt") in ARENA_FORMATS})
        if arenas:  # a platform's pages are the poller's (high-water mark, rate limits), never one plain GET
            raise ValueError(f"arena sources {', '.join(arenas)} are collected by the poller's next cycle, not here")
        requests = [SourceRequest(**{k: v for k, v in p.items() if k in _REQUEST_FIELDS}) for p in row[0]]
        manifest = []
        with OutboundClient() as client:
            stored_payloads = [
                _store_payload(store, f"{prefix}{n:03d}-{_slug(r.name)}.{_EXTENSIONS[r.fmt]}", r, client)
                for n, r in enumerate(requests)
            ]
        for request, stored in zip(requests, stored_payloads):
            key = stored.key
            with store.open(key) as stream:
                records = count_records(stream, request.fmt)
            manifest.append({**asdict(request), "key": key, "records": records, "sha256": stored.sha256})
        with engine.begin() as conn:
            for request in requests:
                ensure_source(conn, request.name, request.fmt, request.url)
            conn.execute(
                text(
                    """
                    UPDATE collection_runs
                       SET status = :completed, completed_at = clock_timestamp(), attempt = attempt + 1,
                           payload_prefix = :prefix, payloads = CAST(:manifest AS jsonb),
                           items_collected = :collected, credits_used = 0
                     WHERE id = :id
                    """
                ),
                {
                    "id": run_id,
                    "completed": CollectionRunStatus.COMPLETED,
                    "prefix": prefix,
                    "manifest": json.dumps(manifest),
                    "collected": sum(m["records"] for m in manifest),
                },
            )
        return {"run_id": run_id, "payloads": manifest}
    except Exception as error:
        with engine.begin() as conn:
            conn.execute(
                text(
                    """
                    UPDATE collection_runs SET status = :failed, error = :error, fetch_failures = fetch_failures + 1
                     WHERE id = :id
                    """
                ),
                {"id": run_id, "error": failure_message(error), "failed": CollectionRunStatus.FAILED},
            )
            emit(conn, COLLECTION_FAILED, {"collection_run": run_id, "error": failure_message(error)[:500]})
        raise


def collect(
    engine: Engine, store: ObjectStore, requests: list[SourceRequest], query_design_id: int | None = None
) -> int:
    """Create and run a collection run in one go; returns its id."""
    run_id = create_collection_run(engine, requests, query_design_id)
    run_collection(engine, store, run_id)
    return run_id


def payload_fingerprint(manifest: list[dict]) -> str:
    """Identifies a run's payloads exactly: equal fingerprints, byte-identical input."""
    digest = hashlib.sha256()
    for payload in manifest:
        digest.update(f"{payload['key']}\0{payload['fmt']}\0{payload['name']}\0{payload['sha256']}\n".encode())
    return digest.hexdigest()


#: A completed collection run not ingested yet; unless asked otherwise, not one whose ingestion was given up
#: on (``ingest_abandoned_at``: it failed more often than the sensor retries, so a person decides).
_WAITING = "status = :completed AND ingested_at IS NULL AND (:include_abandoned OR ingest_abandoned_at IS NULL)"
_WAITING_AFTER = f"""
SELECT id, completed_at FROM collection_runs
 WHERE {_WAITING} AND (completed_at, id) > (CAST(:at AS timestamptz), :id)
 ORDER BY completed_at, id LIMIT :limit
"""  # noqa: S608 (no input in the text)
_WAITING_UP_TO = f"""
SELECT id, completed_at FROM collection_runs
 WHERE {_WAITING} AND (completed_at, id) <= (CAST(:at AS timestamptz), :id)
 ORDER BY completed_at, id LIMIT :limit
"""  # noqa: S608 (no input in the text)
#: The position before every run: (completion time, id) of a keyset walk over completed runs.
START = ("1970-01-01T00:00:00+00:00", 0)


def _waiting(conn: Connection, sql: str, position: tuple, limit: int | None, include_abandoned: bool) -> list:
    at, run_id = position
    params = {"at": at, "id": run_id, "limit": limit, "include_abandoned": include_abandoned}
    return conn.execute(text(sql), {**params, "completed": CollectionRunStatus.COMPLETED}).all()


def runs_waiting_after(
    conn: Connection, position: tuple = START, limit: int | None = None, *, include_abandoned: bool = False
) -> list:
    """Completed runs waiting for ingestion after ``position`` (completion time, id), oldest first, as rows
    ``(id, completed_at)``; at most ``limit`` (None: all). The sensor leaves out runs it gave up on; a person
    ingesting by hand (``observatory ingest``) takes them too (``include_abandoned``)."""
    return _waiting(conn, _WAITING_AFTER, position, limit, include_abandoned)


def runs_waiting_up_to(conn: Connection, position: tuple, limit: int | None = None) -> list:
    """Completed runs still waiting for ingestion at or before ``position``, oldest first: those the sensor
    requested on an earlier tick, whose Dagster history decides whether to retry them."""
    return _waiting(conn, _WAITING_UP_TO, position, limit, include_abandoned=False)


def abandon_ingestion(conn: Connection, run_ids: list[int]) -> None:
    """Give up ingesting these runs automatically (their ingestion failed too often): a person decides."""
    conn.execute(
        text("UPDATE collection_runs SET ingest_abandoned_at = now() WHERE id = ANY(CAST(:ids AS bigint[]))"),
        {"ids": run_ids},
    )


_RUN_STATUS = """
SELECT id, status, attempt, items_collected AS delivered, items_loaded AS loaded,
       items_duplicate AS duplicates, items_rejected AS rejected,
       completed_at, ingested_at, payload_prefix, error
  FROM collection_runs ORDER BY id
"""


def run_status(conn: Connection) -> dict:
    """Every collection run with its counts, and totals: a run is accounted for when it is ingested and
    every row it delivered was loaded, a duplicate or rejected (scripts check ``accounted_for``)."""
    runs = []
    for row in conn.execute(text(_RUN_STATUS)).mappings():
        run = {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in row.items()}
        ingested = row["ingested_at"] is not None
        run["ingested"] = ingested
        run["accounted_for"] = ingested and row["delivered"] == row["loaded"] + row["duplicates"] + row["rejected"]
        runs.append(run)
    totals = {k: sum(r[k] for r in runs) for k in ("delivered", "loaded", "duplicates", "rejected")}
    totals["runs"] = len(runs)
    totals["accounted_for"] = all(r["accounted_for"] for r in runs if r["ingested"])
    return {"runs": runs, "totals": totals}
