"""Query-design search terms matched in items, ignoring case and accents, whole words and phrases."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import Connection, text

from observatory_assets.lib.text import collapse_whitespace

# ---------------------------------------------------------------- search terms

_FOLD = str.maketrans({"ø": "o", "æ": "ae", "œ": "oe", "ß": "ss", "ð": "d", "þ": "th", "ł": "l", "đ": "d"})


def fold(value: str) -> str:
    """Case- and accent-insensitive form of a text: casefolded, accents stripped, ø→o, æ→ae."""
    decomposed = unicodedata.normalize("NFKD", value.casefold().translate(_FOLD))
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


@dataclass(frozen=True)
class TermMatcher:
    """The search terms of a query design, compiled to one whole-word/phrase pattern."""

    terms: tuple[str, ...]
    pattern: re.Pattern | None
    by_folded: dict[str, str]

    def match(self, title: str | None, body: str | None) -> list[str]:
        """The terms (as written in the query design) that occur in title or text, sorted."""
        if self.pattern is None:
            return []
        found = {
            self.by_folded[collapse_whitespace(m)] for m in self.pattern.findall(fold(f"{title or ''}\n{body or ''}"))
        }
        return sorted(found)


def compile_terms(terms: Iterable[str]) -> TermMatcher:
    """A matcher for ``terms``; a term matches as a whole word or phrase, whitespace-insensitively."""
    by_folded: dict[str, str] = {}
    for term in terms:
        folded = collapse_whitespace(fold(term))
        if folded:
            by_folded.setdefault(folded, term.strip())
    if not by_folded:
        return TermMatcher((), None, {})
    alternatives = sorted(by_folded, key=len, reverse=True)
    body = "|".join(r"\s+".join(re.escape(word) for word in alt.split(" ")) for alt in alternatives)
    return TermMatcher(tuple(by_folded.values()), re.compile(rf"(?<!\w)(?:{body})(?!\w)"), by_folded)


def query_design_terms(conn: Connection, run_id: int) -> list[str]:
    """The search terms of the query design behind a collection run (none without one).

    ``query_designs.search_terms`` holds ``{"term": ..., "language": ...}`` objects or plain strings.
    """
    terms = conn.execute(
        text(
            """
            SELECT coalesce(t ->> 'term', t #>> '{}')
              FROM collection_runs r
              JOIN query_designs q ON q.id = r.query_design_id
             CROSS JOIN LATERAL jsonb_array_elements(q.search_terms) AS t
             WHERE r.id = :run_id
            """
        ),
        {"run_id": run_id},
    ).scalars()
    return [t for t in terms if t]
