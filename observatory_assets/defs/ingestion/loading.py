"""Loading a completed collection run into ``raw_items``: COPY, then set-based dedup.

The payloads are streamed record by record, in chunks, with ``COPY`` into a
temporary staging table that holds only what deduplication needs (keys, content
hash, rejections); a handful of set-based statements then decide, in one
transaction, what each delivered row became, and the chunk's new items, kept in
memory meanwhile, are copied straight into ``raw_items`` (their text crosses to
the server once and is written once):

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

A row that names its outlet (``source``, ``publisher``, ``outlet`` or ``site``;
see ``records.pick_outlet``) is attributed to that source, registered on first
sight with the defaults; its dedup key is ``(outlet, external_id)``. The run's
source stays the payload's origin, and rejected rows stay with it. Only an
aggregator may name outlets: the rows of a catalog source that is not one keep
their source, and no row is attributed to a catalog source that is not an
aggregator (it never takes over that source's keys or credibility).

Every outcome is keyed by ``(collection_run_id, record_no)``, so ingesting a run
again, or after a crash half way (the transaction never committed), produces
exactly the same tables. Dates are judged against the run's fetch time (its
``completed_at``), never the clock at load time, so loading is a pure function
of the payloads and the loader version. A run whose payloads, loader version and
counts are already in place is verified with three index lookups instead of being
parsed again; otherwise (forced, tampered counts, or a new ``LOADER_VERSION``)
the run's earlier outcomes are replaced in the same transaction: its rejections
and duplicate links are rebuilt, and an item it loaded whose row is now rejected
is removed, so every delivered row has exactly one outcome.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import date

from sqlalchemy import Connection, Engine, text

from observatory_assets.defs.actors.linking import public_figure_pseudonyms
from observatory_assets.defs.ingestion.collect import payload_fingerprint
from observatory_assets.defs.ingestion.payload_reader import PayloadReader, Placement
from observatory_assets.lib.pseudonyms import AuthorPolicy
from observatory_assets.lib.sql import ensure_month_partition, month_partition_name
from observatory_assets.lib.statuses import CollectionRunStatus
from resources.embedded import author_pseudonym_key
from resources.object_store import ObjectStore

log = logging.getLogger(__name__)

#: Bump when parsing or normalization changes what a payload loads as: a run ingested under
#: another version is loaded again, its outcomes replaced, the next time it is ingested (no force needed).
LOADER_VERSION = "4"

# source_id is the payload's source; outlet, when set, names the source the row is attributed to.
CREATE_STAGING = """
CREATE TEMP TABLE staged (
    record_no integer NOT NULL, source_id bigint NOT NULL, outlet text, payload_key text NOT NULL,
    reason text, detail text, payload text, payload_bytes bigint,
    external_id text, content_hash bytea, published_at timestamptz
) ON COMMIT DROP
"""

NEXT_CHUNK = "TRUNCATE staged"

# Catalog sources that are not aggregators: their rows name no outlet, and no row is attributed to them.
DESCRIBED_NON_AGGREGATORS = "SELECT name FROM sources WHERE catalog_file IS NOT NULL AND NOT aggregator"

# Every staged row with the source it is attributed to.
_ATTRIBUTED = """
  FROM staged s
  LEFT JOIN sources o ON o.name = s.outlet
"""
_SOURCE = "coalesce(o.id, s.source_id)"

# ON CONFLICT DO NOTHING also skips a row that conflicts with one inserted earlier by the
# same statement, so inserting in record_no order keeps the first row of every key and content.
INSERT_NEW_KEYS = f"""
INSERT INTO item_keys (source_id, external_id, content_hash, published_at, collection_run_id, record_no)
SELECT {_SOURCE}, s.external_id, s.content_hash, s.published_at, :run_id, s.record_no
  {_ATTRIBUTED}
 WHERE s.reason IS NULL
 ORDER BY s.record_no
ON CONFLICT DO NOTHING
RETURNING item_id, record_no
"""

# The valid rows the insert did not return are items of this run loaded before (a forced re-ingest:
# this run, this record) or repeat an item by key or content; the repeats are linked, and the outcomes
# counted per attributed source. The rows the insert returned are loaded by definition. Each row looks
# its matches up by index (LIMIT 1 of a unique key keeps the planner from hashing all of item_keys,
# which it prefers while the table is small). {pending} names the rows, see RESOLVE and RESOLVE_STAGED.
_RESOLVE = """
WITH outcome AS (
    SELECT s.record_no, s.source_id, s.external_id,
           coalesce(k.item_id, h.item_id) AS item_id,
           CASE WHEN coalesce(k.collection_run_id, h.collection_run_id) = :run_id
                     AND coalesce(k.record_no, h.record_no) = s.record_no THEN 'loaded'
                WHEN k.item_id IS NOT NULL THEN 'source_external_id'
                ELSE 'content_hash' END AS outcome
      FROM {pending}
      LEFT JOIN LATERAL (SELECT * FROM item_keys k
                          WHERE k.source_id = s.source_id AND k.external_id = s.external_id LIMIT 1) k ON true
      LEFT JOIN LATERAL (SELECT * FROM item_keys h WHERE h.content_hash = s.content_hash LIMIT 1) h ON true
), linked AS (
    INSERT INTO item_duplicates (collection_run_id, record_no, source_id, external_id, duplicate_of_item_id, matched_on)
    SELECT :run_id, record_no, source_id, external_id, item_id, outcome FROM outcome WHERE outcome <> 'loaded'
    ON CONFLICT (collection_run_id, record_no) DO NOTHING
)
SELECT source_id, count(*) FILTER (WHERE outcome = 'loaded') AS loaded,
       count(*) FILTER (WHERE outcome <> 'loaded') AS duplicates
  FROM outcome GROUP BY source_id
"""
# A few rows of a chunk were not inserted (a first load): they come as arrays.
RESOLVE = _RESOLVE.format(
    pending="""unnest(CAST(:record_nos AS integer[]), CAST(:source_ids AS bigint[]), CAST(:external_ids AS text[]),
                  CAST(:content_hashes AS bytea[])) AS s (record_no, source_id, external_id, content_hash)"""
)
# No row of a chunk was inserted (a forced re-ingest, a chunk of repeats): every valid staged row is
# pending, and is read where it already is instead of crossing to the server again as arrays.
RESOLVE_STAGED = _RESOLVE.format(
    pending=f"""(SELECT s.record_no, {_SOURCE} AS source_id, s.external_id, s.content_hash
               {_ATTRIBUTED}
              WHERE s.reason IS NULL) AS s"""
)

INSERT_REJECTS = """
INSERT INTO rejected_items (collection_run_id, record_no, source_id, reason, detail, payload, payload_key, payload_bytes)
SELECT :run_id, record_no, source_id, reason, detail, payload, payload_key, payload_bytes
  FROM staged WHERE reason IS NOT NULL
ON CONFLICT (collection_run_id, record_no) DO NOTHING
"""

# A reload replaces the run's earlier outcomes: rejections and duplicate links are rebuilt from scratch.
FORGET_EARLIER_OUTCOMES = (
    "DELETE FROM rejected_items WHERE collection_run_id = :run_id",
    "DELETE FROM item_duplicates WHERE collection_run_id = :run_id",
)

# Items an earlier load of this run kept whose row is rejected now (a new loader version):
# the rejection replaces the item (its features, embedding and event membership cascade).
DROP_ITEMS_NOW_REJECTED = """
WITH dropped AS (
    DELETE FROM item_keys k USING rejected_items x
     WHERE k.collection_run_id = :run_id AND x.collection_run_id = :run_id AND x.record_no = k.record_no
    RETURNING k.item_id
)
DELETE FROM raw_items r USING dropped d WHERE r.id = d.item_id
"""

RECORD_INGESTED = """
UPDATE collection_runs
   SET items_collected = :delivered, items_loaded = :loaded, items_duplicate = :duplicates,
       items_rejected = :rejected, ingested_at = clock_timestamp(), ingest_fingerprint = :fingerprint
 WHERE id = :run_id
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
            "SELECT status, payloads, started_at, completed_at, items_collected, ingest_fingerprint "
            "FROM collection_runs WHERE id = :id"
        ),
        {"id": run_id},
    ).one_or_none()
    if row is None or row.status != CollectionRunStatus.COMPLETED:
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
        sources = conn.execute(
            text("SELECT name, id, type, config ->> 'arena' AS arena FROM sources WHERE name = ANY(:names)"),
            {"names": [p["name"] for p in run.payloads]},
        ).all()
        described = conn.execute(text(DESCRIBED_NON_AGGREGATORS)).scalars().all()
        placements = {row.name: Placement.of_source(row.type, row.arena) for row in sources}
        authors = _author_policy(conn, run_id, {p.platform for p in placements.values()})
    source_ids = {row.name: row.id for row in sources}
    reader = PayloadReader(
        store, run.payloads, source_ids, run.started_at, run.completed_at, frozenset(described), placements, authors
    )
    params = {"run_id": run_id}
    with engine.connect() as conn, conn.begin(), reader:
        conn.execute(text("SELECT pg_advisory_xact_lock(hashtext('observatory.ingest'), :run_id)"), params)
        conn.exec_driver_sql(CREATE_STAGING)
        for statement in FORGET_EARLIER_OUTCOMES:
            conn.execute(text(statement), params)
        counts, new_items, created = _load_chunks(conn, reader, run_id)
        conn.execute(text(DROP_ITEMS_NOW_REJECTED), params)
        totals = sum(counts.values(), Counter())
        delivered = reader.records
        if delivered != run.items_collected:
            log.warning(
                "collection run %s delivered %s rows, the collector counted %s", run_id, delivered, run.items_collected
            )
        conn.execute(
            text(RECORD_INGESTED),
            {
                **params,
                "delivered": delivered,
                "fingerprint": fingerprint,
                **{k: totals[k] for k in ("loaded", "duplicates", "rejected")},
            },
        )
    names = reader.source_names()
    return IngestResult(
        run_id=run_id,
        delivered=delivered,
        loaded=totals["loaded"],
        duplicates=totals["duplicates"],
        rejected=totals["rejected"],
        new_items=new_items,
        by_source={
            names[source_id]: {k: tally[k] for k in ("loaded", "duplicates", "rejected")}
            for source_id, tally in sorted(counts.items(), key=lambda entry: names[entry[0]])
        },
        reject_reasons=dict(reader.reasons),
        partitions_created=created,
        seconds=time.perf_counter() - started,
    )


def _author_policy(conn: Connection, run_id: int, platforms: set[str]) -> AuthorPolicy:
    """How the run stores authors: pseudonymised, in clear where its design says ``authors: clear``, and
    public figures always in clear (see ``docs/actors.md``)."""
    key = author_pseudonym_key()
    clear = conn.execute(
        text(
            """SELECT coalesce(d.arenas ->> 'authors' = 'clear', false) FROM collection_runs r
                 LEFT JOIN query_designs d ON d.id = r.query_design_id WHERE r.id = :run_id"""
        ),
        {"run_id": run_id},
    ).scalar()
    return AuthorPolicy(key, bool(clear), public_figure_pseudonyms(conn, key, platforms))


def _load_chunks(conn: Connection, reader: PayloadReader, run_id: int) -> tuple[dict[int, Counter], int, list[str]]:
    """Stage, resolve and copy the run's rows chunk by chunk: the outcomes per attributed source,
    how many items are new, and the partitions created for them."""
    counts: dict[int, Counter] = {}
    new_items = 0
    created: list[str] = []
    params = {"run_id": run_id}
    while reader.stage_chunk(conn):
        reader.register_outlets(conn)
        created += ensure_month_partitions(conn, "raw_items", reader.take_new_months())
        new_ids = {record_no: item_id for item_id, record_no in conn.execute(text(INSERT_NEW_KEYS), params).all()}
        new_items += len(new_ids)
        for row in _resolve(conn, reader, run_id, new_ids):
            counts.setdefault(row.source_id, Counter()).update(loaded=row.loaded, duplicates=row.duplicates)
        conn.execute(text(INSERT_REJECTS), params)
        for source_id, rejected in reader.take_rejects().items():
            counts.setdefault(source_id, Counter()).update(rejected=rejected)
        for source_id, loaded in reader.copy_new_items(conn, run_id, new_ids).items():
            counts.setdefault(source_id, Counter()).update(loaded=loaded)
        conn.exec_driver_sql(NEXT_CHUNK)
    return counts, new_items, created


def _resolve(conn: Connection, reader: PayloadReader, run_id: int, new_ids: dict[int, int]) -> list:
    """RESOLVE's outcome counts per source for the chunk's valid rows the key insert did not return."""
    if not new_ids:
        return conn.execute(text(RESOLVE_STAGED), {"run_id": run_id}).all()
    pending = reader.not_inserted(new_ids)
    if not pending["record_nos"]:
        return []
    return conn.execute(text(RESOLVE), {"run_id": run_id, **pending}).all()


def ensure_month_partitions(conn: Connection, table: str, months: set[date]) -> list[str]:
    """Create the missing monthly partitions of ``table``; returns the names created."""
    created = []
    for month in sorted(months):
        if ensure_month_partition(conn, table, month):
            created.append(month_partition_name(table, month))
    return created


def items_per_platform(conn: Connection) -> dict[str, int]:
    """How many items each platform contributed, most first: where the collection's material comes from."""
    rows = conn.execute(
        text("SELECT coalesce(platform, '-'), count(*) FROM raw_items GROUP BY 1 ORDER BY 2 DESC, 1")
    ).all()
    return dict(rows)
