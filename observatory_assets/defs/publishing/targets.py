"""Where digests go: the :class:`Target` interface, and the Ghost implementation of it (the static
one is in :mod:`site`).

A target puts one day's sanitized digest HTML under a deterministic identity, shows or hides it
(``live``), and deletes it for good. Ghost: one post per record with the slug
``observatory-digest-<date>``, an internal tag ``#obs-digest-<date>`` and an internal tag carrying
the content hash, so a retried publish (after a crash between Ghost's create and our commit) finds
the post and sees that it already holds this content. Trend charts are not sent to Ghost: the post
holds text and links only (the static site inlines the charts).
"""

from __future__ import annotations

from datetime import date
from typing import Protocol

from sqlalchemy import Connection

from observatory_assets.defs.publishing.ghost import GhostClient, internal_tag
from observatory_assets.defs.publishing.site import Placement, StaticTarget
from resources.object_store import ObjectStore
from resources.publish_target import PublishTarget

TARGET_KINDS = ("static", "ghost")


class Target(Protocol):
    """One publishing target."""

    kind: str
    inline_charts: bool

    def put(
        self, external_id: str | None, day: date, title: str, fragment: str, content_hash: str, live: bool
    ) -> Placement:
        """Make the target show ``fragment`` for ``day`` (or hide it when not ``live``); idempotent."""
        ...

    def delete(self, external_id: str) -> bool:
        """Delete the content for good; False if it was already gone."""
        ...

    def link(self, external_id: str, url: str | None) -> str | None:
        """A link for people to open the content now, from what its record stores."""
        ...

    def finish(self, conn: Connection) -> bool:
        """Bring derived content (indexes, feeds) in line with the records (read on ``conn``); True if anything
        changed."""
        ...


def ghost_slug(day: date) -> str:
    return f"observatory-digest-{day.isoformat()}"


def record_tag(day: date) -> str:
    return internal_tag(f"obs-digest-{day.isoformat()}")


def hash_tag(content_hash: str) -> str:
    return internal_tag(f"obs-hash-{content_hash[:24]}")


class GhostTarget:
    """Publishes each digest as one Ghost post through the Admin API."""

    kind = "ghost"
    inline_charts = False

    def __init__(self, client: GhostClient) -> None:
        self.client = client

    def put(
        self, external_id: str | None, day: date, title: str, fragment: str, content_hash: str, live: bool
    ) -> Placement:
        slug, tags, status = (
            ghost_slug(day),
            [record_tag(day), hash_tag(content_hash)],
            "published" if live else "draft",
        )
        post = self.client.find_post(slug=slug, tag=tags[0])  # with its tags, drafts included
        if post is None and external_id:
            post = self.client.get_post(external_id)
        if post is None:
            post = self.client.create_post(title, fragment, slug, tags, status=status)
        elif not (hash_tag(content_hash) in post.tags and post.status == status and post.title == title):
            post = self.client.update_post(
                post.id, post.updated_at, title=title, html=fragment, tags=tags, status=status
            )
        return Placement(post.id, post.url)

    def delete(self, external_id: str) -> bool:
        return self.client.delete_post(external_id)

    def link(self, external_id: str, url: str | None) -> str | None:
        return url  # a post's public URL does not expire

    def finish(self, conn: Connection) -> bool:
        return False


def build_targets(config: PublishTarget, store: ObjectStore) -> dict[str, Target]:
    """Every target this configuration can reach: the static site always, Ghost when configured.
    Close the Ghost client with :func:`close_targets`."""
    targets: dict[str, Target] = {"static": StaticTarget(store, config.site_url)}
    if config.ghost_configured:
        targets["ghost"] = GhostTarget(GhostClient(config.ghost_url, config.ghost_admin_key))
    return targets


def target_for(targets: dict[str, Target], kind: str) -> Target:
    """The target named ``kind``; ValueError (one line for the CLI) when it cannot be reached."""
    if kind not in TARGET_KINDS:
        raise ValueError(f"publish target must be one of {TARGET_KINDS}, not {kind!r}")
    if kind not in targets:
        raise ValueError("the ghost target needs OBSERVATORY_GHOST_URL and OBSERVATORY_GHOST_ADMIN_KEY")
    return targets[kind]


def close_targets(targets: dict[str, Target]) -> None:
    for target in targets.values():
        if isinstance(target, GhostTarget):
            target.client.close()


__all__ = ["GhostTarget", "Placement", "StaticTarget", "Target", "TARGET_KINDS", "build_targets", "target_for"]
