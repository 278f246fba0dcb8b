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
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from sqlalchemy import Connection, Engine, text

from observatory_assets.defs.ingestion.records import FORMATS, count_records
from observatory_assets.lib.errors import failure_message
from observatory_assets.lib.outbox import COLLECTION_FAILED, emit
from resources.object_store import ObjectStore, put_bytes

FETCH_TIMEOUT_S = 30
MAX_PAYLOAD_BYTES = 2 * 1024**3
_EXTENSIONS = {"rss": "xml", "atom": "xml", "jsonl": "jsonl", "csv": "csv"}


@dataclass(frozen=True)
class SourceRequest:
    """One source to collect: a ``path`` or ``url`` read as ``fmt``, filed under source ``name``."""

    name: str
    fmt: str
    path: str | None = None
    url: str | None = None

    def __post_init__(self) -> None:
        if self.fmt not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}, not {self.fmt!r}")
        if (self.path is None) == (self.url is None):
            raise ValueError("give exactly one of a file path or a URL")
        if not self.name.strip():
            raise ValueError("a source needs a name")


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


def _fetch(request: SourceRequest) -> bytes:
    if request.path is not None:
        return Path(request.path).read_bytes()
    if not request.url.lower().startswith(("http://", "https://")):
        raise ValueError("only http(s) URLs can be fetched")
    with urllib.request.urlopen(request.url, timeout=FETCH_TIMEOUT_S) as response:  # noqa: S310 (scheme checked)
        data = response.read(MAX_PAYLOAD_BYTES + 1)
    if len(data) > MAX_PAYLOAD_BYTES:
        raise ValueError(f"payload larger than {MAX_PAYLOAD_BYTES} bytes")
    return data


def create_collection_run(engine: Engine, requests: list[SourceRequest], query_design_id: int | None = None) -> int:
    """Register a pending collection run for ``requests`` and return its id."""
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
                UPDATE collection_runs SET status = 'running', started_at = clock_timestamp(), error = NULL
                WHERE id = :id AND status IN ('pending', 'failed') RETURNING payloads
                """
            ),
            {"id": run_id},
        ).one_or_none()
    if row is None:
        raise ValueError(f"collection run {run_id} does not exist or is not pending/failed")
    requests = [SourceRequest(**{k: v for k, v in p.items() if k in ("name", "fmt", "path", "url")}) for p in row[0]]
    prefix = f"collection_runs/{run_id}/"
    try:
        manifest = []
        for n, request in enumerate(requests):
            data = _fetch(request)
            key = f"{prefix}{n:03d}-{_slug(request.name)}.{_EXTENSIONS[request.fmt]}"
            stored = put_bytes(store, key, data)
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
                       SET status = 'completed', completed_at = clock_timestamp(), attempt = attempt + 1,
                           payload_prefix = :prefix, payloads = CAST(:manifest AS jsonb),
                           items_collected = :collected, credits_used = 0
                     WHERE id = :id
                    """
                ),
                {
                    "id": run_id,
                    "prefix": prefix,
                    "manifest": json.dumps(manifest),
                    "collected": sum(m["records"] for m in manifest),
                },
            )
        return {"run_id": run_id, "payloads": manifest}
    except Exception as error:
        with engine.begin() as conn:
            conn.execute(
                text("UPDATE collection_runs SET status = 'failed', error = :error WHERE id = :id"),
                {"id": run_id, "error": failure_message(error)},
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
