"""The events open at the current time, held in memory: online assignment and merging in pure numpy.

This is the heart of event clustering (see :mod:`~observatory_assets.defs.events.clustering` for the
rules and how runs read and write Postgres). An :class:`EventTracker` takes items one at a time in
publication order: each joins the best-scoring open event (cosine similarity to the centroid less a time
penalty) when the score reaches the threshold, or founds a new event; two open events whose centroids
converge are merged into the older one. It knows nothing of the database: ids come from a callable and
every event that leaves memory (closed by time, or merged away) is handed to another, so the same
tracker serves the clustering run, the offline quality benches and tests.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

import numpy as np

DEFAULT_COHESION_EXPONENT = 0.5


@dataclass(frozen=True)
class ClusteringParams:
    """How close an item must be to join an event, and for how long an event stays open."""

    #: Cosine similarity (after the time penalty) from which an item joins an event.
    threshold: float
    #: An event takes no items once it has not been seen for this long (a day without a retelling ends it).
    window_hours: float = 24.0
    #: An event stops taking items this long after its first one, however often it is retold.
    max_span_hours: float = 168.0
    #: Score lost when the event was last seen a whole window ago (linear in between).
    time_penalty: float = 0.1
    #: Added to ``threshold``: two open events whose centroids are this similar are merged (by default
    #: the lexical embedder's margin; each embedder has its own).
    merge_margin: float = 0.05
    #: The guard against chaining: an item's similarity to the centroid of an event of at least
    #: ``cohesion_min_items`` items is scaled by the event's cohesion (the length of its members' mean
    #: vector, 1.0 when they are all alike) to this power. An event grown from several stories has a
    #: generic centroid that many items resemble a little; its low cohesion keeps it from growing further.
    #: 0 turns the guard off (pure centroid linkage), 1 is average linkage over the members. An embedder
    #: may declare its own (see ``clustering.cohesion_exponent_of``): e5's is 0.25.
    cohesion_exponent: float = DEFAULT_COHESION_EXPONENT
    cohesion_min_items: int = 5


class Event:
    """One event being built: the running sum of its members' vectors, its members and their sources."""

    __slots__ = ("id", "new", "touched", "sum", "first", "first_ts", "first_hash", "last", "last_ts", "items",
                 "sources", "vectors", "slot")  # fmt: skip

    def __init__(self, event_id: int, new: bool, dimensions: int):
        self.id = event_id
        self.new = new
        self.touched = new
        self.sum = np.zeros(dimensions, dtype=np.float64)
        self.first: datetime | None = None
        self.first_ts = 0.0  # ``first`` in epoch seconds
        self.first_hash: bytes | None = None
        self.last: datetime | None = None
        self.last_ts = 0.0  # ``last`` in epoch seconds
        self.items: list[int] = []
        self.sources: Counter = Counter()
        self.vectors = np.zeros((4, dimensions), dtype=np.float64)
        self.slot = -1

    def add(self, item_id: int, at: datetime, item_hash: bytes, source_id: int, vector: np.ndarray) -> None:
        self.sum += vector
        timestamp = at.timestamp()
        if self.first is None:
            self.first, self.first_ts, self.first_hash = at, timestamp, item_hash
        self.last, self.last_ts = at, timestamp
        self.items.append(item_id)
        self.sources[source_id] += 1
        if len(self.items) > len(self.vectors):
            self.vectors = np.vstack([self.vectors, np.zeros_like(self.vectors)])
        self.vectors[len(self.items) - 1] = vector

    def absorb(self, other: Event) -> None:
        """Take over every member of ``other`` (which is left empty)."""
        self.sum += other.sum
        count, extra = len(self.items), len(other.items)
        if count + extra > len(self.vectors):
            self.vectors = np.vstack([self.vectors[:count], np.zeros((count + extra, self.vectors.shape[1]))])
        self.vectors[count : count + extra] = other.vectors[:extra]
        self.items.extend(other.items)
        self.sources.update(other.sources)
        if (other.first, other.first_hash) < (self.first, self.first_hash):
            self.first, self.first_ts, self.first_hash = other.first, other.first_ts, other.first_hash
        if other.last > self.last:
            self.last, self.last_ts = other.last, other.last_ts
        other.sum[:] = 0.0
        other.items, other.sources = [], Counter()

    def length(self) -> float:
        """The length of the sum of the members' vectors (as ``np.linalg.norm`` computes it)."""
        return math.sqrt(self.sum.dot(self.sum))

    def centroid(self, length: float | None = None) -> np.ndarray:
        norm = self.length() if length is None else length
        return self.sum / norm if norm else self.sum

    def canonical_item(self) -> int:
        """The member closest to the centroid (the earliest on a tie)."""
        return self.items[int(np.argmax(self.vectors[: len(self.items)] @ self.centroid()))]


class ActiveEvents:
    """The events open at the current time: centroids as rows of one matrix for exact scoring."""

    def __init__(self, dimensions: int, params: ClusteringParams):
        self.dimensions = dimensions
        self.window = params.window_hours * 3600.0
        self.max_span = params.max_span_hours * 3600.0
        self.cohesion_exponent = params.cohesion_exponent
        self.cohesion_min_items = params.cohesion_min_items
        self.centroids = np.zeros((256, dimensions), dtype=np.float64)
        self.last_seen = np.zeros(256, dtype=np.float64)
        self.first_seen = np.zeros(256, dtype=np.float64)
        #: per slot, the factor an item's similarity to the event's centroid is scaled by (see ClusteringParams)
        self.cohesion = np.ones(256, dtype=np.float64)
        self.events: list[Event] = []
        # lower bounds of the open events' last and first seen: nothing closes before they run out
        self.earliest_last = np.inf
        self.earliest_first = np.inf

    def put(self, event: Event) -> None:
        if event.slot < 0:
            if len(self.events) == len(self.last_seen):
                self.centroids = np.vstack([self.centroids, np.zeros_like(self.centroids)])
                self.last_seen = np.concatenate([self.last_seen, np.zeros_like(self.last_seen)])
                self.first_seen = np.concatenate([self.first_seen, np.zeros_like(self.first_seen)])
                self.cohesion = np.concatenate([self.cohesion, np.ones_like(self.cohesion)])
            event.slot = len(self.events)
            self.events.append(event)
        slot, length, count = event.slot, event.length(), len(event.items)
        self.centroids[slot] = event.centroid(length)
        self.last_seen[slot] = event.last_ts
        self.first_seen[slot] = event.first_ts
        self.cohesion[slot] = (
            (length / count) ** self.cohesion_exponent
            if count >= self.cohesion_min_items and self.cohesion_exponent
            else 1.0
        )
        self.earliest_last = min(self.earliest_last, event.last_ts)
        self.earliest_first = min(self.earliest_first, event.first_ts)

    def expire(self, now: float) -> list[Event]:
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
        self.cohesion[: len(kept)] = self.cohesion[: len(self.events)][keep]
        for slot, event in enumerate(kept):
            event.slot = slot
        self.events = kept
        return gone

    def remove(self, event: Event) -> None:
        """Drop ``event`` (merged into another): the last open event takes its slot."""
        last = self.events.pop()
        if last is not event:
            for rows in (self.centroids, self.last_seen, self.first_seen, self.cohesion):
                rows[event.slot] = rows[last.slot]
            last.slot = event.slot
            self.events[event.slot] = last
        event.slot = -1

    def converging(self, event: Event, minimum: float) -> tuple[float, Event] | None:
        """The open event (other than ``event``) whose centroid is most similar to its, if at least ``minimum``."""
        n = len(self.events)
        similarity = self.centroids[:n] @ self.centroids[event.slot]
        similarity[event.slot] = -np.inf
        best = int(similarity.argmax())
        return (float(similarity[best]), self.events[best]) if similarity[best] >= minimum else None

    def best(self, vector: np.ndarray, now: float, params: ClusteringParams) -> tuple[float, float, Event] | None:
        """The best-scoring open event as (score, cosine similarity, event); the first slot on a tie.

        When no score reaches the threshold, the open event most similar to the item is returned with its
        plain similarity as the score: an item that similar would found an event that merges into it at
        once (see ``converging``), so it joins directly instead."""
        n = len(self.events)
        if n == 0:
            return None
        similarity = self.centroids[:n] @ vector
        gap = now - self.last_seen[:n]
        score = similarity * self.cohesion[:n] - params.time_penalty * gap / self.window
        score[gap > self.window] = -np.inf
        best = int(score.argmax())
        if score[best] < params.threshold:
            closest = int(np.where(gap > self.window, -np.inf, similarity).argmax())
            if similarity[closest] >= params.threshold + params.merge_margin:
                return float(similarity[closest]), float(similarity[closest]), self.events[closest]
        return (float(score[best]), float(similarity[best]), self.events[best]) if np.isfinite(score[best]) else None


class EventTracker:
    """Online clustering over the open events: assignment, merging and closing (see module).

    ``next_id`` gives a new event's id; ``release`` receives every event that leaves memory: closed
    (its window or span passed), merged away (left empty), or, at :meth:`close_all`, still open.
    ``merges`` maps each merged event's id to (kept event id, centroid similarity, time and hash of the
    item whose joining merged them), following later merges to the event that finally kept them.
    """

    def __init__(
        self, dimensions: int, params: ClusteringParams, next_id: Callable[[], int], release: Callable[[Event], None]
    ):
        self.dimensions = dimensions
        self.params = params
        self.next_id = next_id
        self.release = release
        self.active = ActiveEvents(dimensions, params)
        self.merges: dict[int, tuple] = {}
        #: the ids ``merges`` maps to each kept event (re-pointed in one step when that event is merged too)
        self.folded_into: dict[int, list[int]] = {}
        self.new_events = 0
        self.joined_existing = 0
        self.events_merged = 0

    def assign(
        self, item_id: int, at: datetime, item_hash: bytes, source_id: int, vector: np.ndarray
    ) -> tuple[Event, float]:
        """Put one item (the next in publication order) into an event; returns the event that holds it
        after any merge and the item's cosine similarity to the centroid it joined (1.0 for a founder)."""
        now = at.timestamp()
        p = self.params
        for event in self.active.expire(now):
            self.release(event)
        chosen, similarity = None, 1.0
        best = self.active.best(vector, now, p)
        if best is not None and best[0] >= p.threshold:
            _, similarity, chosen = best
        if chosen is None:
            chosen = Event(self.next_id(), new=True, dimensions=self.dimensions)
            self.new_events += 1
        else:
            self.joined_existing += 1
        chosen.add(item_id, at, item_hash, source_id, vector)
        chosen.touched = True
        self.active.put(chosen)
        while converging := self.active.converging(chosen, p.threshold + p.merge_margin):
            chosen = self._merge(chosen, *converging, at, item_hash)
        return chosen, similarity

    def _merge(self, event: Event, similarity: float, other: Event, at: datetime, item_hash: bytes) -> Event:
        """Fold the younger of two converging events into the older; returns the kept one."""
        kept, merged = sorted((event, other), key=lambda e: (e.first, e.first_hash))
        kept.absorb(merged)
        kept.touched = True
        self.active.remove(merged)
        self.active.put(kept)
        self.release(merged)
        self.events_merged += 1
        folded = self.folded_into.pop(merged.id, [])
        for earlier in folded:
            self.merges[earlier] = (kept.id, *self.merges[earlier][1:])
        self.merges[merged.id] = (kept.id, round(similarity, 6), at, item_hash)
        self.folded_into.setdefault(kept.id, []).extend([*folded, merged.id])
        return kept

    def close_all(self) -> None:
        """Release every event still open (the end of a run)."""
        for event in self.active.events:
            self.release(event)


def cluster_in_memory(
    items: Iterable[tuple[int, datetime, bytes, int, np.ndarray]], dimensions: int, params: ClusteringParams
) -> dict[int, int]:
    """Cluster ``(item id, time, hash, source id, unit vector)`` tuples, given in publication order, from
    nothing; returns item id → the id of the event that holds it at the end (ids numbered from 1)."""
    counter = iter(range(1, 1 << 62))
    held: dict[int, int] = {}
    tracker = EventTracker(dimensions, params, lambda: next(counter), lambda event: None)
    events: dict[int, Event] = {}
    for item in items:
        event, _ = tracker.assign(*item)
        events[event.id] = event
    for event in events.values():
        for item_id in event.items:
            held[item_id] = event.id
    return held
