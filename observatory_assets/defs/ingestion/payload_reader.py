"""The payload reader: a collection run's payloads parsed, normalized and handed to the loader in chunks.

:class:`PayloadReader` runs on a background thread, reading each payload record by
record (:mod:`.records`), normalizing every record into an item or a rejection
(:mod:`.normalizing`), deciding which outlet a row is attributed to, and handing
rows to the loading connection in batches through a bounded queue. The loader
(:mod:`.loading`) stages each chunk with ``COPY`` (:meth:`PayloadReader.stage_chunk`),
decides outcomes with set-based SQL, then copies the chunk's new items straight
into ``raw_items`` (:meth:`PayloadReader.copy_new_items`).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime
from typing import NamedTuple

import orjson
from psycopg import Copy
from psycopg.types.string import BytesBinaryDumper
from sqlalchemy import Connection, text

from observatory_assets.defs.ingestion.normalizing import Presence, normalize_record
from observatory_assets.defs.ingestion.records import Rejection, iter_records
from observatory_assets.lib.pseudonyms import IDENTIFYING_FIELDS, AuthorPolicy
from observatory_assets.lib.streaming import in_background
from resources.object_store import ObjectStore

#: Rows resolved per round of set-based statements, and rows per hand-over from the reader thread.
CHUNK_ROWS = 5_000
BATCH_ROWS = 500
#: How many chunks the reader may parse ahead: while the server resolves and copies one chunk, the
#: reader keeps parsing instead of waiting for room (one chunk ahead left it idle behind slow rounds).
READ_AHEAD_CHUNKS = 3

#: Per chunk, the keys and rejections of every delivered row are staged; the items themselves
#: stay in memory and are copied straight into raw_items once their dedup outcome is known.
STAGED_COLUMNS = (
    "record_no", "source_id", "outlet", "payload_key", "reason", "detail", "payload", "payload_bytes",
    "external_id", "content_hash", "published_at",
)  # fmt: skip
_STAGED_TYPES = ("int4", "int8", "text", "text", "text", "text", "text", "int8", "text", "bytea", "timestamptz")
RAW_ITEM_COLUMNS = (
    "id", "source_id", "collection_run_id", "record_no", "external_id", "url", "title", "text", "author",
    "published_at", "fetched_at", "language", "content_hash", "raw_metadata",
    "platform", "arena", "content_type", "author_handle", "views", "likes", "shares", "comments", "author_pseudonym",
)  # fmt: skip
_RAW_ITEM_TYPES = (
    "int8", "int8", "int8", "int4", "text", "text", "text", "text", "text",
    "timestamptz", "timestamptz", "text", "bytea", "bytea",
    "text", "text", "text", "text", "int8", "int8", "int8", "int8", "text",
)  # fmt: skip
#: The types whose rows are articles; every other source delivers posts unless a row says otherwise.
ARTICLE_TYPES = ("rss", "atom")


class Placement(NamedTuple):
    """Where a source's rows appear unless a row says otherwise: the source's type is the platform, its
    ``config.arena`` (else its type) the arena, and feeds deliver articles, everything else posts."""

    platform: str
    arena: str
    content_type: str

    @classmethod
    def of_source(cls, source_type: str, arena: str | None = None) -> Placement:
        return cls(source_type, arena or source_type, "article" if source_type in ARTICLE_TYPES else "post")


# Outlets named by rows, registered on first sight with the defaults (credibility 0.5).
REGISTER_OUTLETS = """
INSERT INTO sources (name, type)
SELECT name, type FROM unnest(CAST(:names AS text[]), CAST(:types AS text[])) AS o (name, type)
ON CONFLICT (name) DO NOTHING
"""


class RememberedAuthors:
    """A run's :class:`AuthorPolicy` with its verdict per (platform, author, handle) worked out once: a run
    repeats its authors, and each verdict costs up to two HMACs. Memory is bounded by ``limit`` verdicts."""

    def __init__(self, policy: AuthorPolicy, limit: int = 100_000):
        self._policy = policy
        self._limit = limit
        self._verdicts: dict[tuple, tuple] = {}

    def apply(
        self, platform: str | None, author: str | None, handle: str | None, metadata: dict
    ) -> tuple[str | None, str | None, str | None, dict]:
        """What :meth:`AuthorPolicy.apply` returns for the same arguments."""
        key = (platform, author, handle)
        verdict = self._verdicts.get(key)
        if verdict is None:
            if len(self._verdicts) >= self._limit:
                self._verdicts.clear()
            probe: dict = {}
            pseudonym, author, handle, kept = self._policy.apply(platform, author, handle, probe)
            verdict = self._verdicts[key] = (pseudonym, author, handle, kept is probe)
        pseudonym, author, handle, in_clear = verdict
        if not in_clear:
            metadata = {k: v for k, v in metadata.items() if k not in IDENTIFYING_FIELDS}
        return pseudonym, author, handle, metadata


class _Row(NamedTuple):
    """One delivered row, read and normalized: its ``staged`` row and, for an item, its raw_items
    columns from record_no on (see RAW_ITEM_COLUMNS) and the outlet it names."""

    staged: tuple
    item: tuple | None = None
    outlet: str | None = None
    outlet_type: str | None = None
    published_at: datetime | None = None


class PayloadReader:
    """Parses and normalizes a run's payloads on a background thread, handing rows to the
    loading connection in batches through a bounded queue (memory stays flat in run size,
    and parsing overlaps with the server's work on the previous chunk)."""

    def __init__(
        self,
        store: ObjectStore,
        manifest: list[dict],
        source_ids: dict[str, int],
        fetched_at: datetime,
        judged_at: datetime,
        non_aggregators: frozenset[str] = frozenset(),
        placements: dict[str, Placement] | None = None,
        authors: AuthorPolicy | None = None,
    ):
        self._store = store
        self._authors = RememberedAuthors(authors) if authors is not None else None
        self._non_aggregators = non_aggregators
        self._manifest = manifest
        self._source_ids = source_ids
        self._placements = placements or {}
        self._outlet_ids: dict[str, int] = {}
        self._fetched_at = fetched_at
        self._judged_at = judged_at
        self._batches_ahead = in_background(
            self._batches(), READ_AHEAD_CHUNKS * CHUNK_ROWS // BATCH_ROWS, "payload-reader"
        )
        self._finished = False
        self._chunk: list[_Row] = []
        self._new_outlets: dict[str, str] = {}
        self._rejects: Counter = Counter()
        self._months: set[date] = set()
        self._ensured: set[date] = set()
        self.records = 0
        self.reasons: Counter = Counter()

    def __enter__(self) -> PayloadReader:
        return self

    def __exit__(self, *exc) -> None:
        self._batches_ahead.close()

    def _batches(self) -> Iterator[tuple[list[_Row], set[date]]]:
        record_no = 0
        rows: list[_Row] = []
        months: set[date] = set()
        for payload in self._manifest:
            source_id = self._source_ids[payload["name"]]
            placement = self._placements.get(payload["name"]) or Placement.of_source(payload["fmt"])
            names_outlets = payload["name"] not in self._non_aggregators
            key = payload["key"]
            with self._store.open(key) as stream:
                for record in iter_records(stream, payload["fmt"]):
                    record_no += 1
                    row = _read_row(
                        record, record_no, source_id, key, payload["fmt"], self._fetched_at, self._judged_at, placement,
                        self._authors,
                    )  # fmt: skip
                    if row.outlet is not None and (not names_outlets or row.outlet in self._non_aggregators):
                        row = row._replace(
                            staged=(*row.staged[:2], None, *row.staged[3:]), outlet=None, outlet_type=None
                        )
                    if row.published_at is not None:
                        months.add(date(row.published_at.year, row.published_at.month, 1))
                    rows.append(row)
                    if len(rows) >= BATCH_ROWS:
                        yield rows, months
                        rows, months = [], set()
        yield rows, months

    def stage_chunk(self, conn: Connection) -> bool:
        """COPY the next chunk (up to CHUNK_ROWS rows) into ``staged`` as the reader delivers it,
        keeping the items for :meth:`copy_new_items`; False when the run is done."""
        if self._finished:
            return False
        self._chunk = []
        with _binary_copy(conn, "staged", STAGED_COLUMNS, _STAGED_TYPES) as copy:
            while len(self._chunk) < CHUNK_ROWS:
                batch = next(self._batches_ahead, None)
                if batch is None:
                    self._finished = True
                    break
                rows, months = batch
                for row in rows:
                    copy.write_row(row.staged)
                    if row.item is None:
                        self.reasons[row.staged[4]] += 1
                        self._rejects[row.staged[1]] += 1
                    elif row.outlet is not None and row.outlet not in self._outlet_ids:
                        self._new_outlets.setdefault(row.outlet, row.outlet_type)
                self._chunk += rows
                self._months |= months
        self.records += len(self._chunk)
        return bool(self._chunk)

    def register_outlets(self, conn: Connection) -> None:
        """Register the outlets first named in this chunk (one statement) and learn their ids."""
        if not self._new_outlets:
            return
        names = list(self._new_outlets)
        conn.execute(text(REGISTER_OUTLETS), {"names": names, "types": list(self._new_outlets.values())})
        self._outlet_ids.update(
            conn.execute(text("SELECT name, id FROM sources WHERE name = ANY(:names)"), {"names": names}).all()
        )
        self._new_outlets = {}

    def not_inserted(self, new_ids: dict[int, int]) -> dict[str, list]:
        """The chunk's items that are not among its new items (record_no → item id), as RESOLVE's arrays."""
        pending = [row for row in self._chunk if row.item is not None and row.staged[0] not in new_ids]
        return {
            "record_nos": [row.staged[0] for row in pending],
            "source_ids": [self._attributed_source(row) for row in pending],
            "external_ids": [row.staged[8] for row in pending],
            "content_hashes": [row.staged[9] for row in pending],
        }

    def _attributed_source(self, row: _Row) -> int:
        """The source an item is attributed to: the outlet it names, or its payload's source."""
        return self._outlet_ids[row.outlet] if row.outlet is not None else row.staged[1]

    def copy_new_items(self, conn: Connection, run_id: int, new_ids: dict[int, int]) -> Counter:
        """COPY the chunk's new items (record_no → item id) into raw_items, attributed to their outlets;
        returns how many each source got."""
        per_source: Counter = Counter()
        with _binary_copy(conn, "raw_items", RAW_ITEM_COLUMNS, _RAW_ITEM_TYPES) as copy:
            for row in self._chunk:
                item_id = new_ids.get(row.staged[0]) if row.item is not None else None
                if item_id is not None:
                    source_id = self._attributed_source(row)
                    per_source[source_id] += 1
                    copy.write_row((item_id, source_id, run_id, *row.item))
        self._chunk = []
        return per_source

    def take_rejects(self) -> Counter:
        """Rejections per (payload) source since the last call."""
        rejects, self._rejects = self._rejects, Counter()
        return rejects

    def take_new_months(self) -> set[date]:
        """Months seen in staged rows that have not been handed out before."""
        new = self._months - self._ensured
        self._ensured |= new
        return new

    def source_names(self) -> dict[int, str]:
        """Source id → name for every source rows were attributed to."""
        return {source_id: name for name, source_id in (*self._source_ids.items(), *self._outlet_ids.items())}


@contextmanager
def _binary_copy(conn: Connection, table: str, columns: tuple[str, ...], types: tuple[str, ...]) -> Iterator[Copy]:
    """A binary ``COPY table (columns) FROM STDIN`` on the loading connection (the server neither
    unescapes nor parses numbers, timestamps or bytea). Bytes go through psycopg's C dumper (the
    registered DB-API one is Python); jsonb values come already in their binary form (see _metadata_json)."""
    with conn.connection.driver_connection.cursor() as cursor:
        cursor.adapters.register_dumper(bytes, BytesBinaryDumper)
        with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN (FORMAT binary)") as copy:
            copy.set_types(types)
            yield copy


def _read_row(
    record,
    record_no: int,
    source_id: int,
    key: str,
    fmt: str,
    fetched_at: datetime,
    judged_at: datetime,
    placement: Placement,
    authors: RememberedAuthors | None,
) -> _Row:
    """A record read and normalized (dates judged against ``judged_at``): an item or a rejection (see _Row),
    its author stored as ``authors`` says (pseudonymised unless kept in clear; no policy: as delivered)."""
    outcome = record if isinstance(record, Rejection) else normalize_record(record, judged_at)
    if isinstance(outcome, Rejection):
        size = None if isinstance(record, Rejection) else len(record.text.encode("utf-8", "surrogatepass"))
        detail = outcome.detail.replace("\x00", "")
        return _Row((record_no, source_id, None, key, outcome.reason, detail, outcome.payload, size, None, None, None))
    platform, arena, content_type, handle, *counts = _placed(outcome.presence, placement)
    author, metadata, pseudonym = outcome.author, outcome.raw_metadata, None
    if authors is not None:
        pseudonym, author, handle, metadata = authors.apply(platform, author, handle, metadata)
    item = (
        record_no, outcome.external_id, outcome.url, outcome.title, outcome.text, author,
        outcome.published_at, fetched_at, outcome.language, outcome.content_hash, _metadata_json(metadata),
        platform, arena, content_type, handle, *counts, pseudonym,
    )  # fmt: skip
    staged = (
        record_no, source_id, outcome.outlet, key, None, None, None, None,
        outcome.external_id, outcome.content_hash, outcome.published_at,
    )  # fmt: skip
    return _Row(staged, item, outcome.outlet, fmt if outcome.outlet is not None else None, outcome.published_at)


def _placed(presence: Presence, placement: Placement) -> tuple:
    """The platform columns of an item (see RAW_ITEM_COLUMNS): what the row says, else its source's placement."""
    return (
        presence.platform or placement.platform, placement.arena, presence.content_type or placement.content_type,
        presence.author_handle, presence.views, presence.likes, presence.shares, presence.comments,
    )  # fmt: skip


#: jsonb's binary wire form is this version byte followed by the JSON text.
_JSONB_VERSION = b"\x01"


def _metadata_json(metadata: dict) -> bytes:
    """``metadata`` in jsonb's binary COPY form (written as raw bytes: no dumper runs per row)."""
    try:
        return _JSONB_VERSION + orjson.dumps(metadata)
    except TypeError:  # an integer beyond 64 bits
        return _JSONB_VERSION + json.dumps(metadata, ensure_ascii=False, default=str).encode()
