"""Following actors: a design's actor lists become sources of the catalog.

A query design that names actor lists (``actor_lists: [danish-leaders]``) follows each member's own feed on
the arenas that serve one: a Bluesky presence becomes a ``bluesky`` source reading the author's feed
(``app.bsky.feed.getAuthorFeed`` on the AppView of ``OBSERVATORY_BLUESKY_APPVIEW``), named
``bluesky.<handle>``, shared by every design that follows the actor. Their items belong to the design's
collection runs like any other source's, so they count for the design whatever terms they match.
"""

from __future__ import annotations

import re

from observatory_assets.defs.actors.catalog import ActorCatalog
from observatory_assets.defs.collection.catalog import Catalog, CatalogError, SourceSpec

#: How often an actor's feed is checked, unless the catalog already describes the source.
FOLLOW_POLL = "15m"


def _source_name(platform: str, handle: str) -> str:
    return f"{platform}.{re.sub(r'[^A-Za-z0-9._-]', '-', handle)}"


def with_actor_feeds(catalog: Catalog, actors: ActorCatalog, bluesky_appview: str) -> Catalog:
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
            actor_file, listed = actors.lists[list_name]
            for member in listed.members:
                for presence in actors.actors[member][1].presences:
                    if presence.platform != "bluesky":
                        continue
                    source = _source_name(presence.platform, presence.handle)
                    if source not in sources:
                        spec = SourceSpec(
                            name=source, format="bluesky", poll=FOLLOW_POLL,
                            url=f"{bluesky_appview.rstrip('/')}/xrpc/app.bsky.feed.getAuthorFeed",
                            params={"actor": presence.handle, "filter": "posts_no_replies"},
                        )  # fmt: skip
                        sources[source] = (f"actors/{actor_file}", spec)
                    if source not in followed:
                        followed.append(source)
        designs[name] = (file_name, design.model_copy(update={"sources": followed}))
    return Catalog(sources=sources, designs=designs)
