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
