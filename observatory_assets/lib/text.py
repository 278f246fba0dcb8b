"""Plain text helpers shared by ingestion and enrichment."""

from __future__ import annotations


def collapse_whitespace(text: str) -> str:
    """``text`` with every run of whitespace (line breaks and tabs too) turned into one space, and trimmed.

    Every whitespace character but the space is non-printable, so printable text without double,
    leading or trailing spaces is already collapsed: the common case, decided in C on the ingest hot path.
    """
    if text.isprintable() and "  " not in text and text[:1] != " " and text[-1:] != " ":
        return text
    return " ".join(text.split())
