"""Following actors: a design's actor lists become sources of the catalog.

A query design that names actor lists (``actor_lists: [danish-leaders]``) follows each member's own feed on
the arenas whose API serves one account's posts:

* **Bluesky**: ``app.bsky.feed.getAuthorFeed?actor=<handle>`` on the AppView (``OBSERVATORY_BLUESKY_APPVIEW``),
  the author's own posts without replies;
* **Telegram**: the channel's web preview ``/s/<channel>`` (``OBSERVATORY_TELEGRAM_WEB``): a channel is
  its own author;
* **YouTube**: the channel's uploads playlist, ``playlistItems.list?playlistId=<UU…>`` for channel
  ``UC…``, on the Data API (``OBSERVATORY_YOUTUBE_API``): every upload, newest first, 2 quota units a page
  with the statistics (a search of the channel would cost 101 and see only what search ranks);
* **Reddit**: the user's submissions, ``/user/<name>/submitted.json`` (``OBSERVATORY_REDDIT_API``; unset,
  ``oauth.reddit.com`` with OAuth credentials, else ``www.reddit.com``).

Presences on other platforms (GDELT, the web, X, Facebook, Instagram) are kept for linking but not
followed: no arena here reads one account's posts there. Each followed feed is a source named
``<platform>.<handle>``, shared by every design that follows the actor. Their items belong to the design's
collection runs like any other source's, so they count for the design whatever terms they match.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from observatory_assets.defs.actors.catalog import ActorCatalog, PresenceSpec
from observatory_assets.defs.collection.arenas.youtube import PLAYLIST_PATH, uploads_playlist
from observatory_assets.defs.collection.catalog import Catalog, CatalogError, SourceSpec
from resources.settings import PlatformSettings

#: How often an actor's feed is checked, unless the catalog already describes the source.
FOLLOW_POLL = "15m"

#: An account's own feed on a platform: (endpoint URL, the arena's params) from the handle and the settings.
Feed = Callable[[str, PlatformSettings], tuple[str, dict[str, Any] | None]]


def _base(url: str) -> str:
    return url.rstrip("/")


def _reddit_api(settings: PlatformSettings) -> str:
    if settings.reddit_api:
        return _base(settings.reddit_api)
    oauth = settings.reddit_client_id and settings.reddit_client_secret
    return "https://oauth.reddit.com" if oauth else "https://www.reddit.com"


AUTHOR_FEEDS: dict[str, Feed] = {
    "bluesky": lambda handle, s: (
        f"{_base(s.bluesky_appview)}/xrpc/app.bsky.feed.getAuthorFeed",
        {"actor": handle, "filter": "posts_no_replies"},
    ),
    "telegram": lambda handle, s: (f"{_base(s.telegram_web)}/s/{handle}", None),
    "youtube": lambda handle, s: (f"{_base(s.youtube_api)}{PLAYLIST_PATH}", {"playlistId": uploads_playlist(handle)}),
    "reddit": lambda handle, s: (f"{_reddit_api(s)}/user/{handle}/submitted.json", {"sort": "new"}),
}


def _source_name(platform: str, handle: str) -> str:
    return f"{platform}.{re.sub(r'[^A-Za-z0-9._-]', '-', handle)}"


def feed_source(presence: PresenceSpec, settings: PlatformSettings, where: str) -> SourceSpec:
    """The catalog source that reads ``presence``'s own posts; a handle the platform's API cannot take is a
    :class:`CatalogError` naming ``where`` (the actor's file and field)."""
    try:
        url, params = AUTHOR_FEEDS[presence.platform](presence.handle, settings)
        return SourceSpec(
            name=_source_name(presence.platform, presence.handle), format=presence.platform, poll=FOLLOW_POLL,
            url=url, params=params,
        )  # fmt: skip
    except ValueError as error:  # pydantic's ValidationError is one too
        message = error.errors()[0]["msg"] if isinstance(error, ValidationError) else str(error)
        message = str(message).removeprefix("Value error, ")
        raise CatalogError(
            f"{where}: {presence.platform} handle {presence.handle!r} cannot be followed: {message}"
        ) from None


def with_actor_feeds(catalog: Catalog, actors: ActorCatalog, settings: PlatformSettings) -> Catalog:
    """``catalog`` with a source for every followed actor's feed, added to the designs that follow them; an
    unknown list is a :class:`CatalogError` naming the design's file and field."""
    sources, designs = dict(catalog.sources), {}
    for name, (file_name, design) in catalog.designs.items():
        followed = list(design.sources)
        for list_name in design.actor_lists:
            if list_name not in actors.lists:
                raise CatalogError(
                    f"{file_name}: field designs.{design.name}.actor_lists: unknown actor list {list_name!r}"
                )
            for member in actors.lists[list_name][1].members:
                actor_file, actor = actors.actors[member]
                for number, presence in enumerate(actor.presences):
                    if presence.platform not in AUTHOR_FEEDS:
                        continue
                    source = _source_name(presence.platform, presence.handle)
                    if source not in sources:
                        where = f"actors/{actor_file}: field actors.{member}.presences.{number}.handle"
                        sources[source] = (f"actors/{actor_file}", feed_source(presence, settings, where))
                    if source not in followed:
                        followed.append(source)
        designs[name] = (file_name, design.model_copy(update={"sources": followed}))
    return Catalog(sources=sources, designs=designs)
