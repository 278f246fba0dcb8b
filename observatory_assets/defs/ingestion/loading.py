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

Rows are resolved in chunks while a reader thread parses the next chunk, so
Python parsing overlaps with the server's index work and memory stays bounded.
Within and across chunks the first delivered row (by ``record_no``) of a key or
content wins, exactly as if rows were loaded one by one.

Every outcome is keyed by ``(collection_run_id, record_no)``, so ingesting a run
again, or after a crash half way (the transaction never committed), produces
exactly the same tables. A run whose payloads and counts are already in place
is verified with three index lookups instead of being parsed again.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

from sqlalchemy import Connection, Engine, text

from observatory_assets.defs.ingestion.collect import payload_fingerprint
from observatory_assets.defs.ingestion.records import Rejection, iter_records, normalize_record
from observatory_assets.lib.sql import ensure_month_partition, month_partition_name
from resources.object_store import ObjectStore

log = logging.getLogger(__name__)

#: Bump when parsing or normalization changes what a payload loads as; forces re-ingestion.
LOADER_VERSION = "1"
#: Rows resolved per round of set-based statements, and rows per hand-over from the reader thread.
CHUNK_ROWS = 20_000
BATCH_ROWS = 1_000

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
CREATE TEMP TABLE resolved (record_no integer NOT NULL, item_id bigint NOT NULL, outcome text NOT NULL)
    ON COMMIT DROP;
CREATE TEMP TABLE new_items (item_id bigint NOT NULL, record_no integer NOT NULL) ON COMMIT DROP;
"""

NEXT_CHUNK = "TRUNCATE staged, resolved, new_items"

# ON CONFLICT DO NOTHING also skips a row that conflicts with one inserted earlier by the
# same statement, so inserting in record_no order keeps the first row of every key and content.
INSERT_NEW_KEYS = """
WITH inserted AS (
    INSERT INTO item_keys (source_id, external_id, content_hash, published_at, collection_run_id, record_no)
    SELECT source_id, external_id, content_hash, published_at, :run_id, record_no
      FROM staged WHERE reason IS NULL
     ORDER BY record_no
    ON CONFLICT DO NOTHING
    RETURNING item_id, record_no
)
INSERT INTO new_items SELECT item_id, record_no FROM inserted
"""

# Every valid row now is its own item (this run, this record) or repeats one by key or content.
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

    reader = _PayloadReader(store, run.payloads, source_ids, run.started_at)
    by_source: dict[str, Counter] = {}
    new_items = 0
    created: list[str] = []
    params = {"run_id": run_id}
    with engine.connect() as conn, conn.begin(), reader:
        conn.execute(text("SELECT pg_advisory_xact_lock(hashtext('observatory.ingest'), :run_id)"), params)
        conn.exec_driver_sql(CREATE_STAGING)
        while reader.stage_chunk(conn):
            created += ensure_month_partitions(conn, "raw_items", reader.take_new_months())
            new_items += conn.execute(text(INSERT_NEW_KEYS), params).rowcount
            conn.execute(text(RESOLVE), params)
            conn.execute(text(INSERT_RAW_ITEMS), params)
            conn.execute(text(INSERT_DUPLICATES), params)
            conn.execute(text(INSERT_REJECTS), params)
            for row in conn.execute(text(OUTCOMES_BY_SOURCE)):
                by_source.setdefault(row.name, Counter()).update(
                    loaded=row.loaded, duplicates=row.duplicates, rejected=row.rejected
                )
            conn.exec_driver_sql(NEXT_CHUNK)
        totals = sum(by_source.values(), Counter())
        delivered = reader.records
        if delivered != run.items_collected:
            log.warning(
                "collection run %s delivered %s rows, the collector counted %s", run_id, delivered, run.items_collected
            )
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
                **params,
                "delivered": delivered,
                "fingerprint": fingerprint,
                **{k: totals[k] for k in ("loaded", "duplicates", "rejected")},
            },
        )
    return IngestResult(
        run_id=run_id,
        delivered=delivered,
        loaded=totals["loaded"],
        duplicates=totals["duplicates"],
        rejected=totals["rejected"],
        new_items=new_items,
        by_source={
            name: {k: counts[k] for k in ("loaded", "duplicates", "rejected")} for name, counts in by_source.items()
        },
        reject_reasons=dict(reader.reasons),
        partitions_created=created,
        seconds=time.perf_counter() - started,
    )


_END = object()


class _PayloadReader:
    """Parses and normalizes a run's payloads on a background thread, handing rows to the
    loading connection in batches through a bounded queue (memory stays flat in run size,
    and parsing overlaps with the server's work on the previous chunk)."""

    def __init__(self, store: ObjectStore, manifest: list[dict], source_ids: dict[str, int], fetched_at: datetime):
        self._store = store
        self._manifest = manifest
        self._source_ids = source_ids
        self._fetched_at = fetched_at
        self._queue: queue.Queue = queue.Queue(maxsize=CHUNK_ROWS // BATCH_ROWS)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="payload-reader", daemon=True)
        self._finished = False
        self._months: set[date] = set()
        self._ensured: set[date] = set()
        self.records = 0
        self.reasons: Counter = Counter()

    def __enter__(self) -> _PayloadReader:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        while self._thread.is_alive():  # unblock a reader waiting on a full queue
            try:
                self._queue.get(timeout=0.05)
            except queue.Empty:
                pass
        self._thread.join()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            for batch in self._batches():
                if not self._put(batch):
                    return
            self._put(_END)
        except BaseException as error:  # handed to the loading thread, which raises it
            self._put(error)

    def _batches(self) -> Iterator[tuple[list[tuple], set[date]]]:
        now = datetime.now(UTC)
        record_no = 0
        rows: list[tuple] = []
        months: set[date] = set()
        for payload in self._manifest:
            source_id = self._source_ids[payload["name"]]
            key = payload["key"]
            with self._store.open(key) as stream:
                for record in iter_records(stream, payload["fmt"]):
                    record_no += 1
                    rows.append(_staged_row(record, record_no, source_id, key, self._fetched_at, now, months))
                    if len(rows) >= BATCH_ROWS:
                        yield rows, months
                        rows, months = [], set()
        yield rows, months

    def stage_chunk(self, conn: Connection) -> bool:
        """COPY the next chunk (up to CHUNK_ROWS rows) into ``staged``; False when the run is done."""
        if self._finished:
            return False
        staged = 0
        cursor = conn.connection.driver_connection.cursor()
        with cursor.copy(f"COPY staged ({', '.join(STAGED_COLUMNS)}) FROM STDIN") as copy:
            copy.set_types(_STAGED_TYPES)
            while staged < CHUNK_ROWS:
                item = self._queue.get()
                if item is _END:
                    self._finished = True
                    break
                if isinstance(item, BaseException):
                    raise item
                rows, months = item
                for row in rows:
                    copy.write_row(row)
                    if row[3] is not None:
                        self.reasons[row[3]] += 1
                staged += len(rows)
                self._months |= months
        cursor.close()
        self.records += staged
        return staged > 0

    def take_new_months(self) -> set[date]:
        """Months seen in staged rows that have not been handed out before."""
        new = self._months - self._ensured
        self._ensured |= new
        return new


def _staged_row(
    record, record_no: int, source_id: int, key: str, fetched_at: datetime, now: datetime, months: set[date]
) -> tuple:
    """One row of ``staged`` (see STAGED_COLUMNS) for a record: an item or a rejection."""
    outcome = record if isinstance(record, Rejection) else normalize_record(record, now)
    if isinstance(outcome, Rejection):
        size = None if isinstance(record, Rejection) else len(record.raw.encode("utf-8", "surrogatepass"))
        return (
            record_no,
            source_id,
            key,
            outcome.reason,
            outcome.detail.replace("\x00", ""),
            outcome.payload,
            size,
            *(None,) * 10,
        )
    published = outcome.published_at
    if published is not None:
        months.add(date(published.year, published.month, 1))
    return (
        record_no, source_id, key, None, None, None, None,
        outcome.external_id, outcome.url, outcome.title, outcome.text, outcome.author,
        published, fetched_at, outcome.language, outcome.content_hash,
        json.dumps(outcome.raw_metadata, ensure_ascii=False, default=str),
    )  # fmt: skip


def ensure_month_partitions(conn: Connection, table: str, months: set[date]) -> list[str]:
    """Create the missing monthly partitions of ``table``; returns the names created."""
    created = []
    for month in sorted(months):
        if ensure_month_partition(conn, table, month):
            created.append(month_partition_name(table, month))
    return created
