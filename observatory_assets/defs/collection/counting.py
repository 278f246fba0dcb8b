"""How many records a collected payload delivers, counted at the speed of the network.

A poll cycle records each changed payload's record count (the fetch history's ``items``, from which the
next cost estimates are made) before ingestion reads it. Parsing a feed with feedparser to count it costs
about 100 times what the fetch does, so a well-formed RSS or Atom feed is counted here with expat (C):
its entries are the ``item`` and ``entry`` elements of the feed namespaces that feedparser maps to its
own (the very table feedparser reads), which is what feedparser turns into entries. A feed expat cannot
read (not well-formed, an encoding expat lacks) or in which it finds no entry is counted by ingestion's
own reader (:func:`~observatory_assets.defs.ingestion.records.count_records`), which also counts the
rejection such a payload becomes.
"""

from __future__ import annotations

import xml.parsers.expat
from typing import BinaryIO

from feedparser.mixin import _FeedParserMixin

from observatory_assets.defs.ingestion.records import count_records

#: The namespaces whose elements feedparser reads as a feed's own (``''``: no namespace).
_FEED_NAMESPACES = frozenset(uri for uri, prefix in _FeedParserMixin.namespaces.items() if prefix == "")
_ENTRY_ELEMENTS = frozenset({"item", "entry"})
_SEPARATOR = " "


def _feed_entries(stream: BinaryIO) -> int | None:
    """The entries of a well-formed feed, or None when expat cannot read it."""
    entries = 0

    def start(name: str, _attributes) -> None:
        nonlocal entries
        uri, _, local = name.rpartition(_SEPARATOR)
        if local.lower() in _ENTRY_ELEMENTS and uri in _FEED_NAMESPACES:
            entries += 1

    parser = xml.parsers.expat.ParserCreate(namespace_separator=_SEPARATOR)
    parser.StartElementHandler = start
    try:
        parser.ParseFile(stream)
    except (xml.parsers.expat.ExpatError, ValueError, LookupError):
        return None
    return entries


def count_payload(stream: BinaryIO, fmt: str) -> int:
    """How many rows the payload in ``stream`` (seekable) delivers to ingestion, as
    :func:`~observatory_assets.defs.ingestion.records.count_records` counts them."""
    if fmt in ("rss", "atom"):
        entries = _feed_entries(stream)
        if entries:
            return entries
        stream.seek(0)
    return count_records(stream, fmt)
