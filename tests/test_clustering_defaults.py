"""What events are by default, in the tracker and the events asset alike: a day without a retelling ends
an event, and an embedder may declare how strongly its space needs guarding against chaining (e5: weaker)."""

from datetime import UTC, datetime, timedelta

import numpy as np

from observatory_assets.defs.enrichment.embedders import E5Embedder
from observatory_assets.defs.enrichment.lexical import LexicalEmbedder
from observatory_assets.defs.events.assets import EventsConfig
from observatory_assets.defs.events.clustering import cohesion_exponent_of
from observatory_assets.defs.events.tracking import ClusteringParams, EventTracker, cluster_in_memory
from tests.support.helpers import labelled_space

T0 = datetime(2014, 3, 10, 14, 0, tzinfo=UTC)


def _wrap(n: int, hours: float, lean: float) -> tuple:
    """A market wrap: the words every day's wrap shares (first axis) and that day's news (``lean``)."""
    vector = np.zeros(8)
    vector[0], vector[1 + n // 3] = 1.0, lean
    return n, T0 + timedelta(hours=hours), bytes([n]), n % 3 + 1, vector / np.linalg.norm(vector)


def test_a_story_retold_within_a_day_stays_one_event_and_the_next_days_telling_is_a_new_one():
    params = ClusteringParams(threshold=0.5)
    # three tellings on each of two days, 26 hours apart; within a day they come hours apart
    items = [_wrap(n, hours, 0.3) for n, hours in enumerate([0, 3, 7, 33, 36, 40])]
    held = cluster_in_memory(items, 8, params)
    assert held[0] == held[1] == held[2] and held[3] == held[4] == held[5] and held[0] != held[3]
    # the same two days under the former 72-hour window: the second day is drawn into the first
    wide = cluster_in_memory(items, 8, ClusteringParams(threshold=0.5, window_hours=72.0))
    assert len(set(wide.values())) == 1


def test_the_events_asset_uses_the_trackers_window_by_default():
    assert EventsConfig().params(0.3, 0.05).window_hours == ClusteringParams(threshold=0.3).window_hours == 24.0


def test_the_e5_space_is_guarded_more_weakly_than_the_lexical_one_and_the_asset_passes_it_on():
    assert cohesion_exponent_of(LexicalEmbedder(labelled_space())) == ClusteringParams(threshold=0.3).cohesion_exponent
    assert cohesion_exponent_of(E5Embedder) == 0.25 < ClusteringParams(threshold=0.3).cohesion_exponent
    assert EventsConfig().params(0.6, 0.2, cohesion_exponent_of(E5Embedder)).cohesion_exponent == 0.25


def test_a_weaker_guard_lets_a_retelling_join_a_large_event_the_default_guard_keeps_out():
    """Five items sharing one component (cohesion 0.70); an item at cosine 0.34 to their centroid scores
    0.34 × 0.70^0.5 = 0.28 under the default guard (below the 0.3 threshold: it founds an event) and
    0.34 × 0.70^0.25 = 0.31 under e5's (it joins); the merge level (0.5) is out of reach either way."""
    for exponent, joins in ((0.5, False), (0.25, True)):
        params = ClusteringParams(threshold=0.3, merge_margin=0.2, cohesion_exponent=exponent)
        tracker = EventTracker(8, params, iter(range(100, 1000)).__next__, lambda event: None)
        for k in range(1, 6):
            vector = np.zeros(8)
            vector[0], vector[k] = 0.6, 0.8
            event, _ = tracker.assign(k, T0 + timedelta(minutes=k), bytes([k]), k, vector)
        assert len(event.items) == 5
        tangent = np.zeros(8)
        tangent[7] = 1.0
        item = 0.34 * event.centroid() + np.sqrt(1 - 0.34**2) * tangent
        joined, _ = tracker.assign(6, T0 + timedelta(minutes=6), b"x", 6, item)
        assert (joined is event) is joins
