"""The arenas the catalog knows, by ``format``, and the one entry point the poller calls for them."""

from __future__ import annotations

from datetime import datetime

from observatory_assets.defs.collection.arenas.base import Arena, collect_pages
from observatory_assets.defs.collection.arenas.bluesky import Bluesky
from observatory_assets.defs.collection.arenas.gdelt import Gdelt
from observatory_assets.defs.collection.arenas.reddit import Reddit
from observatory_assets.defs.collection.arenas.telegram import Telegram
from observatory_assets.defs.collection.arenas.youtube import Youtube
from observatory_assets.defs.collection.fetcher import FetchOutcome, PolledSource
from resources.object_store import ObjectStore
from resources.outbound import OutboundClient

ARENAS: dict[str, Arena] = {arena.format: arena for arena in (Reddit(), Bluesky(), Telegram(), Gdelt(), Youtube())}


def is_arena(fmt: str) -> bool:
    """Whether a catalog format is a platform's API (paged by an arena collector) rather than a feed or file."""
    return fmt in ARENAS


def collect_arena(
    client: OutboundClient, store: ObjectStore, source: PolledSource, key: str, now: datetime
) -> FetchOutcome:
    """One cycle of an arena source: its new pages as one JSONL payload under ``key`` (see :mod:`.base`)."""
    return collect_pages(ARENAS[source.fmt], client, store, source, key, now)
