"""Loading a completed collection run into ``raw_items``: COPY, then set-based dedup.

The payloads are streamed record by record into one temporary staging table
with ``COPY`` (constant memory), then a handful of set-based statements decide,
in one transaction, what each delivered row became:

* **loaded** — a new item: a row in ``item_keys`` (the cross-partition dedup
  index, unique on ``(source, external_id)`` and on ``content_hash``) and in
  ``raw_items``;
* **duplicate** — it repeats a kept item by key or by content: a row in
  ``item_duplicates`` linked to that item;
* **rejected** — it could not be read or normalized: a row in
  ``rejected_items`` with a machine-readable reason.

Every outcome is keyed by ``(collection_run_id, record_no)``, so ingesting a run
again, or after a crash half way (the transaction never committed), produces
exactly the same tables. A run whose payloads and counts are already in place
is verified with three index lookups instead of being parsed again.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

from sqlalchemy import Connection, Engine, text

from observatory_assets.collect import payload_fingerprint
from observatory_assets.records import Rejection, iter_records, normalize_record
from resources.object_store import ObjectStore

log = logging.getLogger(__name__)

#: Bump when parsing or normalization changes what a payload loads as; forces re-ingestion.
LOADER_VERSION = "1"

STAGED_COLUMNS = (
    "record_no", "source_id", "payload_key", "reason", "detail", "payload", "payload_bytes",
    "external_id", "url", "title", "text", "author", "published_at", "fetched_at", "language",
    "content_hash", "raw_metadata",
)  # fmt: skip
_STAGED_TYPES = (
    "int4", "int8", "text", "text", "text", "text", "int8",
    "text", "text", "text", "text", "text", "timestamptz", "timestamptz", "text",
    "bytea", "text",
)  # fmt: skip

CREATE_STAGING = """
CREATE TEMP TABLE staged (
    record_no integer NOT NULL, source_id bigint NOT NULL, payload_key text NOT NULL,
    reason text, detail text, payload text, payload_bytes bigint,
    external_id text, url text, title text, text text, author text,
    published_at timestamptz, fetched_at timestamptz, language text,
    content_hash bytea, raw_metadata jsonb
) ON COMMIT DROP;
CREATE TEMP TABLE resolved (record_no integer PRIMARY KEY, item_id bigint NOT NULL, outcome text NOT NULL)
    ON COMMIT DROP;
CREATE TEMP TABLE new_items (item_id bigint PRIMARY KEY, record_no integer NOT NULL) ON COMMIT DROP;
"""

# Rows not yet resolved; the first by key and by content among them become items.
INSERT_NEW_KEYS = """
WITH pending AS (
    SELECT s.record_no, s.source_id, s.external_id, s.content_hash, s.published_at,
           row_number() OVER (PARTITION BY s.source_id, s.external_id ORDER BY s.record_no) AS key_rank,
           row_number() OVER (PARTITION BY s.content_hash ORDER BY s.record_no) AS hash_rank
      FROM staged s
     WHERE s.reason IS NULL AND NOT EXISTS (SELECT 1 FROM resolved r WHERE r.record_no = s.record_no)
), inserted AS (
    INSERT INTO item_keys (source_id, external_id, content_hash, published_at, collection_run_id, record_no)
    SELECT source_id, external_id, content_hash, published_at, :run_id, record_no
      FROM pending WHERE key_rank = 1 AND hash_rank = 1
     ORDER BY record_no
    ON CONFLICT DO NOTHING
    RETURNING item_id, record_no
)
INSERT INTO new_items SELECT item_id, record_no FROM inserted
"""

# Each pending row is now either its own item (this run, this record) or repeats one.
RESOLVE = """
INSERT INTO resolved (record_no, item_id, outcome)
SELECT s.record_no,
       coalesce(k.item_id, h.item_id),
       CASE WHEN coalesce(k.collection_run_id, h.collection_run_id) = :run_id
                 AND coalesce(k.record_no, h.record_no) = s.record_no THEN 'loaded'
            WHEN k.item_id IS NOT NULL THEN 'source_external_id'
            ELSE 'content_hash' END
  FROM staged s
  LEFT JOIN item_keys k ON k.source_id = s.source_id AND k.external_id = s.external_id
  LEFT JOIN item_keys h ON h.content_hash = s.content_hash
 WHERE s.reason IS NULL
   AND NOT EXISTS (SELECT 1 FROM resolved r WHERE r.record_no = s.record_no)
   AND (k.item_id IS NOT NULL OR h.item_id IS NOT NULL)
"""

INSERT_RAW_ITEMS = """
INSERT INTO raw_items (id, source_id, collection_run_id, record_no, external_id, url, title, text, author,
                       published_at, fetched_at, language, content_hash, raw_metadata)
SELECT n.item_id, s.source_id, :run_id, s.record_no, s.external_id, s.url, s.title, s.text, s.author,
       s.published_at, s.fetched_at, s.language, s.content_hash, s.raw_metadata
  FROM new_items n JOIN staged s USING (record_no)
"""

INSERT_DUPLICATES = """
INSERT INTO item_duplicates (collection_run_id, record_no, source_id, external_id, duplicate_of_item_id, matched_on)
SELECT :run_id, r.record_no, s.source_id, s.external_id, r.item_id, r.outcome
  FROM resolved r JOIN staged s USING (record_no)
 WHERE r.outcome <> 'loaded'
ON CONFLICT (collection_run_id, record_no) DO NOTHING
"""

INSERT_REJECTS = """
INSERT INTO rejected_items (collection_run_id, record_no, source_id, reason, detail, payload, payload_key, payload_bytes)
SELECT :run_id, record_no, source_id, reason, detail, payload, payload_key, payload_bytes
  FROM staged WHERE reason IS NOT NULL
ON CONFLICT (collection_run_id, record_no) DO NOTHING
"""

OUTCOMES_BY_SOURCE = """
SELECT src.name,
       count(*) FILTER (WHERE r.outcome = 'loaded') AS loaded,
       count(*) FILTER (WHERE r.outcome <> 'loaded') AS duplicates,
       count(*) FILTER (WHERE s.reason IS NOT NULL) AS rejected
  FROM staged s
  JOIN sources src ON src.id = s.source_id
  LEFT JOIN resolved r USING (record_no)
 GROUP BY src.name ORDER BY src.name
"""

RECORDED_OUTCOMES = """
SELECT (SELECT count(*) FROM item_keys WHERE collection_run_id = :run_id) AS loaded,
       (SELECT count(*) FROM item_duplicates WHERE collection_run_id = :run_id) AS duplicates,
       (SELECT count(*) FROM rejected_items WHERE collection_run_id = :run_id) AS rejected
"""


@dataclass
class IngestResult:
    """What ingesting one collection run did."""

    run_id: int
    delivered: int
    loaded: int
    duplicates: int
    rejected: int
    new_items: int = 0
    skipped: bool = False
    by_source: dict[str, dict[str, int]] = field(default_factory=dict)
    reject_reasons: dict[str, int] = field(default_factory=dict)
    partitions_created: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def accounted_for(self) -> bool:
        """Every delivered row is loaded, a duplicate or rejected."""
        return self.delivered == self.loaded + self.duplicates + self.rejected


class RunNotReady(ValueError):
    """The collection run does not exist or has not completed."""


def _run_row(conn: Connection, run_id: int):
    row = conn.execute(
        text(
            "SELECT status, payloads, started_at, items_collected, ingest_fingerprint "
            "FROM collection_runs WHERE id = :id"
        ),
        {"id": run_id},
    ).one_or_none()
    if row is None or row.status != "completed":
        state = "does not exist" if row is None else f"is {row.status}"
        raise RunNotReady(f"collection run {run_id} {state}; only completed runs can be ingested")
    return row


def _fingerprint(manifest: list[dict]) -> str:
    return f"{LOADER_VERSION}:{payload_fingerprint(manifest)}"


def ingest_collection_run(engine: Engine, store: ObjectStore, run_id: int, force: bool = False) -> IngestResult:
    """Load a completed collection run into ``raw_items``; idempotent, see the module docstring."""
    started = time.perf_counter()
    with engine.connect() as conn:
        run = _run_row(conn, run_id)
        fingerprint = _fingerprint(run.payloads)
        if not force and run.ingest_fingerprint == fingerprint:
            recorded = conn.execute(text(RECORDED_OUTCOMES), {"run_id": run_id}).one()
            if sum(recorded) == run.items_collected:
                return IngestResult(
                    run_id, run.items_collected, *recorded, skipped=True, seconds=time.perf_counter() - started
                )
            log.warning("collection run %s was ingested but its counts do not add up; loading it again", run_id)
        source_ids = dict(
            conn.execute(
                text("SELECT name, id FROM sources WHERE name = ANY(:names)"),
                {"names": [p["name"] for p in run.payloads]},
            ).all()
        )

    with engine.connect() as conn, conn.begin():
        conn.execute(text("SELECT pg_advisory_xact_lock(hashtext('observatory.ingest'), :run_id)"), {"run_id": run_id})
        conn.exec_driver_sql(CREATE_STAGING)
        delivered, months, reasons = _stage_payloads(conn, store, run.payloads, source_ids, run.started_at)
        created = ensure_month_partitions(engine, "raw_items", months)
        valid = delivered - sum(reasons.values())
        params = {"run_id": run_id}
        resolved = 0
        new_items = 0
        while resolved < valid:
            new_items += conn.execute(text(INSERT_NEW_KEYS), params).rowcount
            resolved += conn.execute(text(RESOLVE), params).rowcount
        conn.execute(text(INSERT_RAW_ITEMS), params)
        conn.execute(text(INSERT_DUPLICATES), params)
        conn.execute(text(INSERT_REJECTS), params)
        by_source = {
            row.name: {"loaded": row.loaded, "duplicates": row.duplicates, "rejected": row.rejected}
            for row in conn.execute(text(OUTCOMES_BY_SOURCE))
        }
        loaded = sum(s["loaded"] for s in by_source.values())
        duplicates = sum(s["duplicates"] for s in by_source.values())
        rejected = sum(s["rejected"] for s in by_source.values())
        if delivered != run.items_collected:
            log.warning("collection run %s delivered %s rows, the collector counted %s", run_id, delivered, run.items_collected)
        conn.execute(
            text(
                """
                UPDATE collection_runs
                   SET items_collected = :delivered, items_loaded = :loaded, items_duplicate = :duplicates,
                       items_rejected = :rejected, ingested_at = clock_timestamp(), ingest_fingerprint = :fingerprint
                 WHERE id = :run_id
                """
            ),
            {
                "run_id": run_id,
                "delivered": delivered,
                "loaded": loaded,
                "duplicates": duplicates,
                "rejected": rejected,
                "fingerprint": fingerprint,
            },
        )
    return IngestResult(
        run_id=run_id,
        delivered=delivered,
        loaded=loaded,
        duplicates=duplicates,
        rejected=rejected,
        new_items=new_items,
        by_source=by_source,
        reject_reasons=dict(reasons),
        partitions_created=created,
        seconds=time.perf_counter() - started,
    )


def _stage_payloads(
    conn: Connection, store: ObjectStore, manifest: list[dict], source_ids: dict[str, int], fetched_at: datetime
) -> tuple[int, set[date], Counter]:
    """COPY every record of every payload into ``staged``; returns (rows, months seen, reject reasons)."""
    now = datetime.now(UTC)
    months: set[date] = set()
    reasons: Counter = Counter()
    record_no = 0
    cursor = conn.connection.driver_connection.cursor()
    columns = ", ".join(STAGED_COLUMNS)
    with cursor.copy(f"COPY staged ({columns}) FROM STDIN") as copy:
        copy.set_types(_STAGED_TYPES)
        for payload in manifest:
            source_id = source_ids[payload["name"]]
            key = payload["key"]
            with store.open(key) as stream:
                for record in iter_records(stream, payload["fmt"]):
                    record_no += 1
                    outcome = record if isinstance(record, Rejection) else normalize_record(record, now)
                    if isinstance(outcome, Rejection):
                        reasons[outcome.reason] += 1
                        size = len(record.raw.encode("utf-8", "surrogatepass")) if not isinstance(record, Rejection) else None
                        copy.write_row(
                            (record_no, source_id, key, outcome.reason, outcome.detail, outcome.payload, size)
                            + (None,) * 10
                        )
                        continue
                    published = outcome.published_at
                    if published is not None:
                        months.add(date(published.year, published.month, 1))
                    copy.write_row(
                        (
                            record_no, source_id, key, None, None, None, None,
                            outcome.external_id, outcome.url, outcome.title, outcome.text, outcome.author,
                            published, fetched_at, outcome.language, outcome.content_hash,
                            json.dumps(outcome.raw_metadata, ensure_ascii=False, default=str),
                        )
                    )  # fmt: skip
    cursor.close()
    return record_no, months, reasons


def ensure_month_partitions(engine: Engine, table: str, months: set[date]) -> list[str]:
    """Create the missing monthly partitions of ``table`` (each in its own short transaction)."""
    created = []
    for month in sorted(months):
        with engine.begin() as conn:
            if conn.execute(text("SELECT ensure_month_partition(CAST(:t AS regclass), :m)"), {"t": table, "m": month}).scalar():
                created.append(f"{table}_{month:%Y_%m}")
    return created
