"""Events: items that tell the same news story, found by online (incremental) clustering.

Items are taken one at a time in publication order (publication time, then
content hash, both independent of arrival; the fetch time stands in for a
missing publication date). Each item
is compared with the centroids of the events *active* at its time — those whose
newest item is at most ``window_hours`` (default 72 h) older — and

* joins the best-scoring one when the score (cosine similarity to the
  centroid, minus a small penalty growing with the time since the event was
  last seen) reaches ``threshold`` (by default the embedder's calibrated
  ``join_threshold``);
* otherwise founds a new event.

(A stricter rule for large events, joining only when the item was also close
to one of their newest members, split broad real stories told from many angles
into dozens of events and was dropped; see ``bench/cluster_quality.py``.)

**Converging events merge.** After an item joins an event, the event's
centroid is compared with the other open events': one within
``threshold + merge_margin`` of it tells the same story (two early tellings
from different angles each founded an event, and the story's later items drew
them together). The younger event is folded into the older, which keeps its
id, since it may already be published or be a trend's evidence. The merge is
recorded in ``event_merges``, and the younger event's members and trend
evidence move to the older before it is removed.

A story told again after the window has passed is therefore a new event, and
so is a story still being retold ``max_span_hours`` (default a week) after
its first item: an event cannot grow without end by chaining.

**Batch independence.** The outcome is a function of the set of embedded
items, not of how they arrived: every run processes the not-yet-clustered
items in publication order, and if any of them is older than items already
clustered, those later items are taken out of their events again and
re-clustered with the new ones (an event's state is recomputed from its
remaining members, summed in the same order as when they joined). A merge
made after that point is replayed too: the re-clustering starts at the first
item of the event it merged into. The same items in one collection run or in
ten give the same events.

**Bounded work.** Only the events active within the window of the earliest
pending item are loaded (an indexed range on ``events.last_seen_at``); while
the run proceeds, events falling out of the window are written back and
dropped from memory. Each item is scored against the active events only,
exactly (a matrix product), so the cost per item is bounded by the window,
never by the size of the archive. The stored centroids carry an HNSW index
for nearest-event queries (:func:`nearest_events`).

An event keeps its centroid (normalized mean of its items' vectors), item and
distinct-source counts, first/last seen, the most central item as canonical
item with its title, and an extractive summary (that item's first sentence);
``event_items`` records each item's similarity to the centroid it joined.
Everything of one clustering run is written in one transaction.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
from sqlalchemy import Engine

from observatory_assets.lib.outbox import EVENT_CREATED_FROM_STAGE
from observatory_assets.lib.statuses import WebhookSubscriptionStatus
from resources.postgres import register_vector_type

EVENTS = "events"
CHUNK_SIZE = 5000
_ID_BLOCK = 1000
_STAGE_FLUSH = 20_000


@dataclass(frozen=True)
class ClusteringParams:
    """How close an item must be to join an event, and for how long an event stays open."""

    #: Cosine similarity (after the time penalty) from which an item joins an event.
    threshold: float
    window_hours: float = 72.0
    #: An event stops taking items this long after its first one, however often it is retold.
    max_span_hours: float = 168.0
    #: Score lost when the event was last seen a whole window ago (linear in between).
    time_penalty: float = 0.1
    #: Added to ``threshold``: two open events whose centroids are this similar are merged (by default
    #: the lexical embedder's margin; each embedder has its own).
    merge_margin: float = 0.05


@dataclass
class ClusteringResult:
    """What one clustering run did."""

    embedder: str
    items_assigned: int = 0
    new_events: int = 0
    joined_existing: int = 0
    reopened_items: int = 0
    events_updated: int = 0
    events_removed: int = 0
    events_merged: int = 0
    rebuilt: bool = False
    largest_events: list[dict] = field(default_factory=list)
    seconds: float = 0.0


class _Event:
    __slots__ = ("id", "new", "touched", "sum", "first", "first_hash", "last", "items", "sources", "vectors", "slot")

    def __init__(self, event_id: int, new: bool, dimensions: int):
        self.id = event_id
        self.new = new
        self.touched = new
        self.sum = np.zeros(dimensions, dtype=np.float64)
        self.first: datetime | None = None
        self.first_hash: bytes | None = None
        self.last: datetime | None = None
        self.items: list[int] = []
        self.sources: Counter = Counter()
        self.vectors = np.zeros((4, dimensions), dtype=np.float64)
        self.slot = -1

    def add(self, item_id: int, at: datetime, item_hash: bytes, source_id: int, vector: np.ndarray) -> None:
        self.sum += vector
        if self.first is None:
            self.first, self.first_hash = at, item_hash
        self.last = at
        self.items.append(item_id)
        self.sources[source_id] += 1
        if len(self.items) > len(self.vectors):
            self.vectors = np.vstack([self.vectors, np.zeros_like(self.vectors)])
        self.vectors[len(self.items) - 1] = vector

    def absorb(self, other: _Event) -> None:
        """Take over every member of ``other`` (which is left empty)."""
        self.sum += other.sum
        count, extra = len(self.items), len(other.items)
        if count + extra > len(self.vectors):
            self.vectors = np.vstack([self.vectors[:count], np.zeros((count + extra, self.vectors.shape[1]))])
        self.vectors[count : count + extra] = other.vectors[:extra]
        self.items.extend(other.items)
        self.sources.update(other.sources)
        if (other.first, other.first_hash) < (self.first, self.first_hash):
            self.first, self.first_hash = other.first, other.first_hash
        self.last = max(self.last, other.last)
        other.sum[:] = 0.0
        other.items, other.sources = [], Counter()

    def centroid(self) -> np.ndarray:
        norm = np.linalg.norm(self.sum)
        return self.sum / norm if norm else self.sum

    def canonical_item(self) -> int:
        """The member closest to the centroid (the earliest on a tie)."""
        return self.items[int(np.argmax(self.vectors[: len(self.items)] @ self.centroid()))]


class _ActiveEvents:
    """The events open at the current time: centroids as rows of one matrix for exact scoring."""

    def __init__(self, dimensions: int, window_seconds: float, max_span_seconds: float):
        self.dimensions = dimensions
        self.window = window_seconds
        self.max_span = max_span_seconds
        self.centroids = np.zeros((256, dimensions), dtype=np.float64)
        self.last_seen = np.zeros(256, dtype=np.float64)
        self.first_seen = np.zeros(256, dtype=np.float64)
        self.events: list[_Event] = []
        # lower bounds of the open events' last and first seen: nothing closes before they run out
        self.earliest_last = np.inf
        self.earliest_first = np.inf

    def put(self, event: _Event) -> None:
        if event.slot < 0:
            if len(self.events) == len(self.last_seen):
                self.centroids = np.vstack([self.centroids, np.zeros_like(self.centroids)])
                self.last_seen = np.concatenate([self.last_seen, np.zeros_like(self.last_seen)])
                self.first_seen = np.concatenate([self.first_seen, np.zeros_like(self.first_seen)])
            event.slot = len(self.events)
            self.events.append(event)
        self.centroids[event.slot] = event.centroid()
        self.last_seen[event.slot] = event.last.timestamp()
        self.first_seen[event.slot] = event.first.timestamp()
        self.earliest_last = min(self.earliest_last, self.last_seen[event.slot])
        self.earliest_first = min(self.earliest_first, self.first_seen[event.slot])

    def expire(self, now: float) -> list[_Event]:
        """Drop the events closed at ``now`` (window passed or span exhausted); returns them (in slot order)."""
        if self.earliest_last >= now - self.window and self.earliest_first >= now - self.max_span:
            return []
        n = len(self.events)
        keep = (self.last_seen[:n] >= now - self.window) & (self.first_seen[:n] >= now - self.max_span)
        self.earliest_last = float(self.last_seen[:n][keep].min()) if keep.any() else np.inf
        self.earliest_first = float(self.first_seen[:n][keep].min()) if keep.any() else np.inf
        if keep.all():
            return []
        gone = [e for e, k in zip(self.events, keep) if not k]
        kept = [e for e, k in zip(self.events, keep) if k]
        self.centroids[: len(kept)] = self.centroids[: len(self.events)][keep]
        self.last_seen[: len(kept)] = self.last_seen[: len(self.events)][keep]
        self.first_seen[: len(kept)] = self.first_seen[: len(self.events)][keep]
        for slot, event in enumerate(kept):
            event.slot = slot
        self.events = kept
        return gone

    def remove(self, event: _Event) -> None:
        """Drop ``event`` (merged into another): the last open event takes its slot."""
        last = self.events.pop()
        if last is not event:
            for rows in (self.centroids, self.last_seen, self.first_seen):
                rows[event.slot] = rows[last.slot]
            last.slot = event.slot
            self.events[event.slot] = last
        event.slot = -1

    def converging(self, event: _Event, minimum: float) -> tuple[float, _Event] | None:
        """The open event (other than ``event``) whose centroid is most similar to its, if at least ``minimum``."""
        n = len(self.events)
        similarity = self.centroids[:n] @ self.centroids[event.slot]
        similarity[event.slot] = -np.inf
        best = int(np.argmax(similarity))
        return (float(similarity[best]), self.events[best]) if similarity[best] >= minimum else None

    def best(self, vector: np.ndarray, now: float, params: ClusteringParams) -> tuple[float, float, _Event] | None:
        """The best-scoring open event as (score, cosine similarity, event); the first slot on a tie."""
        n = len(self.events)
        if n == 0:
            return None
        similarity = self.centroids[:n] @ vector
        gap = now - self.last_seen[:n]
        score = similarity - params.time_penalty * gap / self.window
        score[gap > self.window] = -np.inf
        best = int(np.argmax(score))
        return (float(score[best]), float(similarity[best]), self.events[best]) if np.isfinite(score[best]) else None


_PENDING = """
SELECT e.item_id, coalesce(r.published_at, r.fetched_at) AS at, r.content_hash, r.source_id
  FROM item_embeddings e
  JOIN raw_items r ON r.id = e.item_id
 WHERE e.embedder = %(embedder)s
   AND NOT EXISTS (SELECT 1 FROM event_items x WHERE x.item_id = e.item_id)
 ORDER BY at, r.content_hash
"""

_STAGE = """
CREATE TEMP TABLE events_stage (
    id bigint PRIMARY KEY, is_new boolean NOT NULL, centroid vector, canonical_item_id bigint,
    first_seen_at timestamptz, last_seen_at timestamptz, item_count integer NOT NULL, source_count integer NOT NULL
) ON COMMIT DROP;
CREATE TEMP TABLE event_items_stage (
    item_id bigint, event_id bigint, similarity real, item_time timestamptz, item_hash bytea, source_id bigint
) ON COMMIT DROP;
CREATE TEMP TABLE event_merges_stage (
    merged_event_id bigint PRIMARY KEY, into_event_id bigint, similarity real, item_time timestamptz, item_hash bytea
) ON COMMIT DROP;
"""

_SUMMARY = "coalesce(substring(r.text FROM '^\\s*(.{20,250}?[.!?])(\\s|$)'), left(r.text, 300))"

_WRITE_BACK = (
    f"""
INSERT INTO events (id, embedder, centroid, canonical_item_id, title, summary, first_seen_at, last_seen_at,
                    item_count, source_count)
OVERRIDING SYSTEM VALUE
SELECT s.id, %(embedder)s, s.centroid, s.canonical_item_id, r.title, {_SUMMARY}, s.first_seen_at, s.last_seen_at,
       s.item_count, s.source_count
  FROM events_stage s LEFT JOIN raw_items r ON r.id = s.canonical_item_id
 WHERE s.is_new AND s.item_count > 0
""",
    f"""
UPDATE events e
   SET centroid = s.centroid, canonical_item_id = s.canonical_item_id, title = r.title, summary = {_SUMMARY},
       first_seen_at = s.first_seen_at, last_seen_at = s.last_seen_at, item_count = s.item_count,
       source_count = s.source_count, updated_at = clock_timestamp()
  FROM events_stage s LEFT JOIN raw_items r ON r.id = s.canonical_item_id
 WHERE e.id = s.id AND NOT s.is_new AND s.item_count > 0
""",
    # a merge: the kept event's record, its new members and the evidence follow (before the merged one goes)
    """
INSERT INTO event_merges (merged_event_id, into_event_id, similarity, item_time, item_hash)
SELECT merged_event_id, into_event_id, similarity, item_time, item_hash FROM event_merges_stage
ON CONFLICT (merged_event_id) DO UPDATE
   SET into_event_id = EXCLUDED.into_event_id, similarity = EXCLUDED.similarity, item_time = EXCLUDED.item_time,
       item_hash = EXCLUDED.item_hash, merged_at = now()
""",
    "UPDATE event_merges m SET into_event_id = s.into_event_id FROM event_merges_stage s "
    "WHERE m.into_event_id = s.merged_event_id",
    "UPDATE event_items x SET event_id = s.into_event_id FROM event_merges_stage s WHERE x.event_id = s.merged_event_id",
    "UPDATE event_items_stage x SET event_id = s.into_event_id FROM event_merges_stage s "
    "WHERE x.event_id = s.merged_event_id",
    """
UPDATE trend_evidence t SET event_id = s.into_event_id, updated_at = now()
  FROM event_merges_stage s
 WHERE t.event_id = s.merged_event_id
   AND NOT EXISTS (SELECT 1 FROM trend_evidence k
                    WHERE k.trend_id = t.trend_id AND k.event_id = s.into_event_id AND k.signal = t.signal)
""",
    "UPDATE trend_evidence t SET closest_event_id = s.into_event_id FROM event_merges_stage s "
    "WHERE t.closest_event_id = s.merged_event_id",
    "DELETE FROM events e USING events_stage s WHERE e.id = s.id AND s.item_count = 0",
    """
INSERT INTO event_items (item_id, event_id, similarity, item_time, item_hash, source_id)
SELECT item_id, event_id, similarity, item_time, item_hash, source_id FROM event_items_stage
ON CONFLICT (item_id) DO UPDATE
   SET event_id = EXCLUDED.event_id, similarity = EXCLUDED.similarity, item_time = EXCLUDED.item_time,
       item_hash = EXCLUDED.item_hash, source_id = EXCLUDED.source_id, assigned_at = now()
""",
)


class _Clustering:
    """One clustering run inside one transaction of a raw psycopg connection."""

    def __init__(self, conn, embedder: str, dimensions: int, params: ClusteringParams):
        self.conn = conn
        self.embedder = embedder
        self.dimensions = dimensions
        self.params = params
        self.active = _ActiveEvents(dimensions, params.window_hours * 3600.0, params.max_span_hours * 3600.0)
        self.free_ids: list[int] = []
        self.staged_members: list[tuple] = []
        self.staged_events: list[tuple] = []
        #: merged event id → (kept event id, centroid similarity, time and hash of the item that merged them)
        self.merges: dict[int, tuple] = {}
        self.result = ClusteringResult(embedder=embedder)
        self.largest: list[tuple[int, int, int]] = []  # (items, -event id, sources) of written events

    # -- state ---------------------------------------------------------------

    def _next_id(self) -> int:
        if not self.free_ids:
            rows = self.conn.execute(
                "SELECT nextval(pg_get_serial_sequence('events', 'id')) FROM generate_series(1, %s)", (_ID_BLOCK,)
            ).fetchall()
            self.free_ids = [r[0] for r in reversed(rows)]
        return self.free_ids.pop()

    def reopen_after(self, at: datetime, item_hash: bytes) -> datetime:
        """Take every item clustered from (``at``, ``item_hash``) on out of its event again, and, when an
        event took part in a merge made after that, its every item (the merge is replayed); returns the
        time from which events must be loaded."""
        while earlier := self.conn.execute(
            """
            SELECT x.item_time, x.item_hash FROM event_items x
             WHERE x.event_id IN (SELECT into_event_id FROM event_merges WHERE (item_time, item_hash) >= (%s, %s))
               AND (x.item_time, x.item_hash) < (%s, %s)
             ORDER BY x.item_time, x.item_hash LIMIT 1
            """,
            (at, item_hash, at, item_hash),
        ).fetchone():
            at, item_hash = earlier
        self.conn.execute("DELETE FROM event_merges WHERE (item_time, item_hash) >= (%s, %s)", (at, item_hash))
        self.result.reopened_items = self.conn.execute(
            "DELETE FROM event_items WHERE (item_time, item_hash) >= (%s, %s)", (at, item_hash)
        ).rowcount
        return at

    def load_active(self, at: datetime) -> None:
        """Load the events open at ``at`` (and those that just lost items) with their members."""
        ids = [
            r[0]
            for r in self.conn.execute(
                "SELECT id FROM events WHERE last_seen_at >= %s - make_interval(secs => %s) AND embedder = %s",
                (at, self.active.window, self.embedder),
            )
        ]
        if not ids:
            return
        events: dict[int, _Event] = {i: _Event(i, new=False, dimensions=self.dimensions) for i in ids}
        rows = self.conn.execute(
            """
            SELECT x.event_id, x.item_id, x.item_time, x.item_hash, x.source_id, e.embedding
              FROM event_items x JOIN item_embeddings e USING (item_id)
             WHERE x.event_id = ANY(%s)
             ORDER BY x.event_id, x.item_time, x.item_hash
            """,
            (ids,),
            binary=True,
        )
        for event_id, item_id, at_, item_hash, source_id, embedding in rows:
            events[event_id].add(item_id, at_, item_hash, source_id, embedding.to_numpy().astype(np.float64))
        stored = {
            r[0]: r[1:]
            for r in self.conn.execute("SELECT id, item_count, last_seen_at FROM events WHERE id = ANY(%s)", (ids,))
        }
        now = at.timestamp()
        for event in sorted(events.values(), key=lambda e: (e.first or at, e.first_hash or b"")):
            count, last_seen = stored[event.id]
            event.touched = count != len(event.items) or last_seen != event.last
            if not event.items or event.last.timestamp() < now - self.active.window:
                if event.touched:
                    self._stage_event(event)
                continue
            self.active.put(event)

    # -- assignment ----------------------------------------------------------

    def assign(self, item_id: int, at: datetime, item_hash: bytes, source_id: int, vector: np.ndarray) -> None:
        now = at.timestamp()
        p = self.params
        for event in self.active.expire(now):
            if event.touched:
                self._stage_event(event)
        chosen, similarity = None, 1.0
        best = self.active.best(vector, now, p)
        if best is not None and best[0] >= p.threshold:
            _, similarity, chosen = best
        if chosen is None:
            chosen = _Event(self._next_id(), new=True, dimensions=self.dimensions)
            self.result.new_events += 1
        else:
            self.result.joined_existing += 1
        chosen.add(item_id, at, item_hash, source_id, vector)
        chosen.touched = True
        self.active.put(chosen)
        while converging := self.active.converging(chosen, p.threshold + p.merge_margin):
            chosen = self._merge(chosen, *converging, at, item_hash)
        self.staged_members.append((item_id, chosen.id, round(similarity, 6), at, item_hash, source_id))
        self.result.items_assigned += 1
        if len(self.staged_members) >= _STAGE_FLUSH:
            self._flush_members()

    def _merge(self, event: _Event, similarity: float, other: _Event, at: datetime, item_hash: bytes) -> _Event:
        """Fold the younger of two converging events into the older (see module); returns the kept one."""
        kept, merged = sorted((event, other), key=lambda e: (e.first, e.first_hash))
        kept.absorb(merged)
        kept.touched = True
        self.active.remove(merged)
        self.active.put(kept)
        self._stage_event(merged)
        self.result.events_merged += 1
        for earlier, (into, *rest) in self.merges.items():
            if into == merged.id:
                self.merges[earlier] = (kept.id, *rest)
        self.merges[merged.id] = (kept.id, round(similarity, 6), at, item_hash)
        return kept

    # -- writing -------------------------------------------------------------

    def _stage_event(self, event: _Event) -> None:
        if event.items:
            row = (event.id, event.new, event.centroid().astype(np.float32), event.canonical_item(),
                   event.first, event.last, len(event.items), len(event.sources))  # fmt: skip
            self.largest.append((len(event.items), -event.id, len(event.sources)))
            if len(self.largest) > 1000:
                self.largest = sorted(self.largest, reverse=True)[:10]
        else:
            row = (event.id, event.new, None, None, None, None, 0, 0)
            self.result.events_removed += 1
        self.staged_events.append(row)
        if not event.new and event.items:
            self.result.events_updated += 1
        # an event that left the window keeps only what the metadata needs
        event.vectors = event.vectors[:0]
        if len(self.staged_events) >= _STAGE_FLUSH // 10:
            self._flush_events()

    def _flush_members(self) -> None:
        with self.conn.cursor() as cursor, cursor.copy("COPY event_items_stage FROM STDIN") as copy:
            for row in self.staged_members:
                copy.write_row(row)
        self.staged_members = []

    def _flush_events(self) -> None:
        with self.conn.cursor() as cursor:
            with cursor.copy("COPY events_stage FROM STDIN WITH (FORMAT BINARY)") as copy:
                copy.set_types(["int8", "bool", "vector", "int8", "timestamptz", "timestamptz", "int4", "int4"])
                for row in self.staged_events:
                    copy.write_row(row)
        self.staged_events = []

    def finish(self) -> None:
        for event in self.active.events:
            if event.touched:
                self._stage_event(event)
        self._flush_events()
        self._flush_members()
        with self.conn.cursor() as cursor, cursor.copy("COPY event_merges_stage FROM STDIN") as copy:
            for merged, row in self.merges.items():
                copy.write_row((merged, *row))
        self.conn.execute(
            EVENT_CREATED_FROM_STAGE, {"enabled": WebhookSubscriptionStatus.ENABLED}
        )  # before the write-back: it compares with the stored counts
        for statement in _WRITE_BACK:
            self.conn.execute(statement, {"embedder": self.embedder} if "%(embedder)s" in statement else None)
        largest = sorted(self.largest, reverse=True)[:10]
        titles = dict(
            self.conn.execute(
                "SELECT id, left(title, 100) FROM events WHERE id = ANY(%s)", ([-e for _, e, _ in largest],)
            ).fetchall()
        )
        self.result.largest_events = [
            {"event": -e, "items": items, "sources": sources, "title": titles.get(-e) or ""}
            for items, e, sources in largest
        ]


def cluster_events(
    engine: Engine, embedder: str, dimensions: int, params: ClusteringParams, chunk_size: int = CHUNK_SIZE
) -> ClusteringResult:
    """Cluster every embedded, not yet clustered item (of ``embedder``'s space) into events.

    Idempotent and batch-independent (see the module docstring); events of
    another embedder are dropped and rebuilt in the new space.
    """
    started = time.perf_counter()
    with engine.connect() as sa_conn:
        conn = sa_conn.connection.driver_connection
        register_vector_type(conn)
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('observatory.events'))")
            stale = conn.execute("DELETE FROM events WHERE embedder <> %s", (embedder,)).rowcount
            clustering = _Clustering(conn, embedder, dimensions, params)
            clustering.result.rebuilt = stale > 0
            first = conn.execute(f"{_PENDING} LIMIT 1", {"embedder": embedder}).fetchone()
            if first is not None:
                conn.execute(_STAGE)
                clustering.load_active(clustering.reopen_after(first[1], first[2]))
                with conn.cursor(name="pending_items") as pending:
                    pending.itersize = chunk_size
                    pending.execute(_PENDING, {"embedder": embedder})
                    while keys := pending.fetchmany(chunk_size):
                        vectors = dict(
                            conn.execute(
                                "SELECT item_id, embedding FROM item_embeddings WHERE item_id = ANY(%s)",
                                ([k[0] for k in keys],),
                                binary=True,
                            ).fetchall()
                        )
                        for item_id, at, item_hash, source_id in keys:
                            vector = vectors[item_id].to_numpy().astype(np.float64)
                            clustering.assign(item_id, at, item_hash, source_id, vector)
                clustering.finish()
    clustering.result.seconds = time.perf_counter() - started
    return clustering.result


def nearest_events(engine: Engine, item_id: int, limit: int = 5) -> list[dict]:
    """The events whose centroids are nearest to an item's vector (pgvector HNSW, cosine), with similarity."""
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(
            """
            SELECT ev.id AS event, ev.title, ev.item_count, 1 - (ev.centroid <=> e.embedding) AS similarity
              FROM item_embeddings e
              JOIN events ev ON ev.embedder = e.embedder
             WHERE e.item_id = %(item_id)s
             ORDER BY ev.centroid <=> e.embedding
             LIMIT %(limit)s
            """,
            {"item_id": item_id, "limit": limit},
        ).mappings()
        return [dict(r) for r in rows]
