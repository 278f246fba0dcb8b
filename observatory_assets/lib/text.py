"""Plain text helpers shared by ingestion and enrichment."""

from __future__ import annotations


def collapse_whitespace(text: str) -> str:
    """``text`` with every run of whitespace (line breaks and tabs too) turned into one space, and trimmed."""
    return " ".join(text.split())
