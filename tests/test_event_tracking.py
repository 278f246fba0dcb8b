"""The in-memory event tracking (pure numpy, no database): joining, founding, closing and merging."""

from datetime import UTC, datetime, timedelta

import numpy as np

from observatory_assets.defs.events.tracking import ClusteringParams, Event, EventTracker, cluster_in_memory

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
PARAMS = ClusteringParams(threshold=0.5, window_hours=72.0, max_span_hours=168.0, time_penalty=0.1, merge_margin=0.05)


def unit(*coordinates: float, dimensions: int = 8) -> np.ndarray:
    vector = np.zeros(dimensions)
    vector[: len(coordinates)] = coordinates
    return vector / np.linalg.norm(vector)


def tracker() -> tuple[EventTracker, list]:
    ids = iter(range(100, 1000))
    released: list = []
    return EventTracker(8, PARAMS, lambda: next(ids), released.append), released


def test_an_item_close_to_an_open_event_joins_it_and_a_distant_one_founds_another():
    t, _ = tracker()
    first, similarity = t.assign(1, T0, b"a", 1, unit(1, 0))
    assert (first.id, similarity) == (100, 1.0)
    joined, similarity = t.assign(2, T0 + timedelta(hours=1), b"b", 2, unit(1, 0.2))
    assert joined is first and 0.95 < similarity < 1.0
    other, _ = t.assign(3, T0 + timedelta(hours=2), b"c", 1, unit(0, 1))
    assert other.id == 101 and other.items == [3]
    assert (t.new_events, t.joined_existing, t.events_merged) == (2, 1, 0)
    assert first.items == [1, 2] and dict(first.sources) == {1: 1, 2: 1}
    assert first.canonical_item() in (1, 2) and np.isclose(np.linalg.norm(first.centroid()), 1.0)


def test_an_event_past_its_window_is_released_and_the_story_told_again_is_a_new_event():
    t, released = tracker()
    old, _ = t.assign(1, T0, b"a", 1, unit(1, 0))
    later, _ = t.assign(2, T0 + timedelta(hours=73), b"b", 1, unit(1, 0))
    assert later is not old and released == [old]
    t.close_all()
    assert released == [old, later]


def test_an_event_stops_taking_items_after_its_maximum_span_however_often_retold():
    t, released = tracker()
    first, _ = t.assign(0, T0, b"0", 1, unit(1, 0))
    for n in range(1, 8):  # retold every day: the window never passes
        event, _ = t.assign(n, T0 + timedelta(days=n, minutes=1), bytes([n]), 1, unit(1, 0))
    assert first in released and event is not first and event.items[0] == 7


def test_the_time_penalty_lowers_the_score_of_an_event_not_seen_for_a_while():
    t, _ = tracker()
    t.assign(1, T0, b"a", 1, unit(1, 0))
    # cosine 0.53: above the threshold when fresh, below it 60 hours later (penalty 0.1 × 60/72)
    late, similarity = t.assign(2, T0 + timedelta(hours=60), b"b", 1, unit(0.53, np.sqrt(1 - 0.53**2)))
    assert late.items == [2] and similarity == 1.0


def test_two_events_that_converge_merge_into_the_older_which_keeps_its_id():
    t, released = tracker()
    older, _ = t.assign(1, T0, b"a", 1, unit(1, 0))
    younger, _ = t.assign(2, T0 + timedelta(hours=1), b"b", 2, unit(0.3, 0.954))  # cosine 0.3: its own event
    assert younger is not older
    # an item between the two joins the younger (cosine 0.81 against 0.80) and draws its centroid to the
    # older one's (cosine 0.58, above threshold + margin)
    kept, _ = t.assign(3, T0 + timedelta(hours=2), b"c", 3, unit(0.8, 0.6))
    assert kept is older and sorted(kept.items) == [1, 2, 3] and len(kept.sources) == 3
    assert released == [younger] and younger.items == []
    assert set(t.merges) == {younger.id} and t.merges[younger.id][0] == older.id
    assert t.events_merged == 1 and [e.id for e in t.active.events] == [older.id]


def test_in_memory_clustering_keeps_each_of_four_interleaved_stories_whole_and_apart():
    rng = np.random.default_rng(3)
    stories = [np.eye(8)[k] for k in range(4)]
    items = []
    for n in range(40):
        noisy = stories[n % 4] + rng.normal(scale=0.15, size=8)
        items.append((n, T0 + timedelta(minutes=10 * n), n.to_bytes(2, "big"), n % 3, noisy / np.linalg.norm(noisy)))
    held = cluster_in_memory(items, 8, PARAMS)
    assert set(held) == set(range(40))
    for n in range(40):  # every item is with the others of its story, and with no other story
        assert {m for m in range(40) if held[m] == held[n]} == {m for m in range(40) if m % 4 == n % 4}


def guarded(exponent: float, merge_margin: float = 0.2) -> EventTracker:
    params = ClusteringParams(threshold=0.3, time_penalty=0.0, merge_margin=merge_margin, cohesion_exponent=exponent)
    ids = iter(range(100, 1000))
    return EventTracker(8, params, lambda: next(ids), lambda event: None)


def test_a_spread_event_does_not_chain_in_an_item_that_a_cohesive_one_would_take():
    """Five items sharing only a generic component (pairwise cosine 0.36) make one spread event; an item at
    cosine 0.34 to its centroid founds its own event under the guard (0.34 × √cohesion 0.70 < 0.3) and
    joins without it. An event of five alike items takes an item at the same cosine either way."""
    for exponent, chained in ((0.5, False), (0.0, True)):
        t = guarded(exponent)
        generic_plus_own = [unit(0.6, *([0] * (k - 1)), 0.8) for k in range(1, 6)]
        spread = {
            t.assign(k, T0 + timedelta(minutes=k), bytes([k]), k, v)[0] for k, v in enumerate(generic_plus_own, 1)
        }
        assert len(spread) == 1
        event = spread.pop()
        assert np.isclose(np.linalg.norm(event.sum) / 5, 0.6986, atol=1e-3)
        tangent = np.zeros(8)
        tangent[7] = 1.0
        item = 0.34 * event.centroid() + np.sqrt(1 - 0.34**2) * tangent
        joined, _ = t.assign(6, T0 + timedelta(minutes=6), b"x", 6, item)
        assert (joined is event) is chained
    t = guarded(0.5)
    for k in range(1, 6):
        cohesive, _ = t.assign(k, T0 + timedelta(minutes=k), bytes([k]), k, unit(0, 1))
    joined, _ = t.assign(6, T0 + timedelta(minutes=6), b"x", 6, unit(0, 0.34, np.sqrt(1 - 0.34**2)))
    assert joined is cohesive and len(cohesive.items) == 6


def test_the_guard_leaves_events_below_its_minimum_size_to_their_centroid():
    t = guarded(0.5)
    first, _ = t.assign(1, T0, b"a", 1, unit(1, 0))
    joined, _ = t.assign(2, T0 + timedelta(minutes=1), b"b", 2, unit(0.31, np.sqrt(1 - 0.31**2)))
    assert joined is first and t.active.cohesion[first.slot] == 1.0


def test_an_event_reloaded_from_its_members_is_guarded_as_the_one_kept_in_memory():
    """A later run rebuilds an open event from its stored members (clustering.load_active): its cohesion,
    and so every score against it, is that of the event the earlier run held."""
    t = guarded(0.5)
    for k in range(1, 7):
        event, _ = t.assign(k, T0 + timedelta(minutes=k), bytes([k]), k, unit(0.6, *([0] * (k - 1)), 0.8))
    reloaded = Event(event.id, new=False, dimensions=8)
    for k, item in enumerate(event.items, 1):
        reloaded.add(item, T0 + timedelta(minutes=k), bytes([k]), k, event.vectors[k - 1])
    later = guarded(0.5)
    later.active.put(reloaded)
    assert np.isclose(later.active.cohesion[reloaded.slot], t.active.cohesion[event.slot])
    assert t.active.cohesion[event.slot] < 0.9


def test_an_item_close_enough_to_merge_with_a_spread_event_joins_it_directly():
    """Below the guarded threshold but at the merge level (0.3 + 0.02): founding an event that merges at once
    would end the same, so the item joins, and no merge is recorded."""
    t = guarded(0.5, merge_margin=0.02)
    for k in range(1, 6):
        event, _ = t.assign(k, T0 + timedelta(minutes=k), bytes([k]), k, unit(0.6, *([0] * (k - 1)), 0.8))
    tangent = np.zeros(8)
    tangent[7] = 1.0
    joined, similarity = t.assign(
        6, T0 + timedelta(minutes=6), b"x", 6, 0.33 * event.centroid() + np.sqrt(1 - 0.33**2) * tangent
    )
    assert joined is event and np.isclose(similarity, 0.33) and (t.events_merged, t.merges) == (0, {})
