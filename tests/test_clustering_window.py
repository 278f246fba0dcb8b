"""A day without a retelling ends an event, by default in the tracker and in the events asset alike."""

from datetime import UTC, datetime, timedelta

import numpy as np

from observatory_assets.defs.events.assets import EventsConfig
from observatory_assets.defs.events.tracking import ClusteringParams, cluster_in_memory

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
