"""Authors at rest: a keyed pseudonym per author, so analysis can count and connect authors without
storing who they are.

The pseudonym is an HMAC-SHA256 of the platform and the author's handle (or, where a platform gives no
handle, the author's name), lower-cased, under a key kept in settings and never with the data: without
the key nobody can test a guessed name against it. Rotating the key changes every pseudonym (see
``docs/actors.md``).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass

PREFIX = "author-"


def author_pseudonym(key: bytes, platform: str | None, handle: str | None) -> str | None:
    """The pseudonym of ``handle`` on ``platform`` (None for an item without an author)."""
    handle = (handle or "").strip().removeprefix("@").lower()
    if not handle:
        return None
    message = f"{(platform or '').strip().lower()}:{handle}".encode()
    return PREFIX + hmac.new(key, message, hashlib.sha256).hexdigest()[:24]


def pseudonyms_of(key: bytes, platforms: Iterable[str], names: Iterable[str]) -> dict[str, str]:
    """Pseudonym → name for every name on every platform: how a catalog's handles and aliases are found
    among pseudonymised authors."""
    platforms, found = list(platforms), {}
    for name in names:
        for platform in platforms:
            pseudonym = author_pseudonym(key, platform, name)
            if pseudonym is not None:
                found[pseudonym] = name
    return found


#: Row fields that name or identify an author; they leave ``raw_metadata`` when the author is pseudonymised.
IDENTIFYING_FIELDS = frozenset(
    {"author", "byline", "username", "user", "author_handle", "handle", "screen_name", "author_name",
     "display_name", "displayName", "author_id", "user_id", "author_did", "did", "channel_title", "channelTitle"}
)  # fmt: skip


@dataclass(frozen=True)
class AuthorPolicy:
    """How one collection run stores its authors: every item gets its pseudonym; the name and handle stay in
    clear only when the run's design says ``authors: clear`` or the author is a public figure (one of
    ``public``, the pseudonyms of public figures' handles and names)."""

    key: bytes
    clear: bool = False
    public: frozenset[str] = frozenset()

    def apply(
        self, platform: str | None, author: str | None, handle: str | None, metadata: dict
    ) -> tuple[str | None, str | None, str | None, dict]:
        """(pseudonym, author, handle, metadata) as stored: identifying fields dropped unless kept in clear."""
        pseudonym = author_pseudonym(self.key, platform, handle or author)
        if pseudonym is None or self.clear or pseudonym in self.public:
            return pseudonym, author, handle, metadata
        if author and handle and author_pseudonym(self.key, platform, author) in self.public:
            return pseudonym, author, handle, metadata
        return pseudonym, None, None, {k: v for k, v in metadata.items() if k not in IDENTIFYING_FIELDS}
