"""The default embedder: TF-IDF of words, title bigrams and character n-grams, hashed into 384 dimensions,
with document frequencies learned from the archive itself.

Headlines are short: two outlets telling one story share few whole words
("Klimaplanen" / "klimaplan", "strike" / "strikes"), so a title contributes
three feature groups, each weighted by sublinear term frequency times inverse
document frequency and normalized on its own:

* words, and the bigrams of consecutive title words (word order);
* character 3–5-grams of every title word, padded at the word's edges
  (``char_wb``: inflections and compounds overlap);
* the words of the lead (the text's first ~300 characters), which adds the
  rest of the item's vector with a smaller share, so boilerplate in a lead
  cannot outweigh the headline.

Every feature is hashed (CRC-32) once: the hash picks its document-frequency
bucket (2^20 of them), its dimension among 384 and its sign. Document
frequencies come from a :class:`LexicalSpace`, a frozen snapshot of the
archive's counts (see :mod:`~observatory_assets.defs.enrichment.spaces`): an
item's vector depends only on the item and the snapshot, never on the other
items embedded with it, and the snapshot's id is part of the embedder's name,
so vectors of two snapshots are never compared.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from observatory_assets.defs.enrichment.vectors import DIMENSIONS, Document, lead, normalize

#: Document-frequency buckets (a power of two: a bucket is the feature hash's low bits).
BUCKETS = 1 << 20
_CHAR_GRAMS = (3, 4, 5)
#: Share of the title in an item's vector; the lead adds the rest.
TITLE_SHARE = 0.7
#: Share of the character n-grams in the title's vector (words and bigrams have the rest).
CHAR_SHARE = 0.5
_CACHE_LIMIT = 300_000
_WORD = re.compile(r"\w+")
_GOLDEN = np.uint64(0x9E3779B1)


@dataclass(frozen=True, eq=False)
class LexicalSpace:
    """A frozen snapshot of the archive's document frequencies: what makes a word common or rare.

    ``document_frequencies[b]`` counts the documents (of ``documents``) containing a feature of bucket
    ``b``; ``join_threshold`` is the similarity from which two items of this space tell the same story,
    derived from the space's own similarity distribution when the snapshot was taken.
    """

    id: int
    documents: int
    document_frequencies: np.ndarray = field(repr=False)
    join_threshold: float = 0.3
    #: The mean vector of the archive sample, removed from every vector (mean-centring): what all items
    #: share (frequent words, boilerplate, hashing collisions of common n-grams) says nothing about a story.
    mean: np.ndarray = field(default_factory=lambda: np.zeros(DIMENSIONS, np.float32), repr=False)

    @cached_property
    def idf(self) -> np.ndarray:
        """Smoothed inverse document frequency per bucket: ``ln((1 + N) / (1 + df)) + 1``."""
        df = self.document_frequencies.astype(np.float64)
        return (np.log((1.0 + self.documents) / (1.0 + df)) + 1.0).astype(np.float32)


def _hash(feature: str) -> int:
    return zlib.crc32(feature.encode())


class FeatureHasher:
    """The hashed features of titles and leads (cached per word: words repeat, Zipf)."""

    def __init__(self) -> None:
        self._words: dict[str, int] = {}
        self._grams: dict[str, np.ndarray] = {}

    def word(self, word: str) -> int:
        """A word's hash."""
        cached = self._words.get(word)
        if cached is None:
            if len(self._words) >= _CACHE_LIMIT:
                self._words.clear()
            cached = self._words[word] = _hash("w\x1f" + word)
        return cached

    def grams(self, word: str) -> np.ndarray:
        """The hashes of a word's character n-grams, the word padded with a space at each edge."""
        cached = self._grams.get(word)
        if cached is None:
            padded = f" {word} "
            grams = [padded[i : i + n] for n in _CHAR_GRAMS for i in range(len(padded) - n + 1)]
            if len(self._grams) >= _CACHE_LIMIT:
                self._grams.clear()
            cached = self._grams[word] = np.fromiter((_hash("c\x1f" + g) for g in grams), np.uint32, len(grams))
        return cached

    def document(self, title: str | None, body: str | None) -> tuple[list[int], list[np.ndarray], list[int]]:
        """(title words and bigrams, title character n-grams, lead words) as feature hashes."""
        known, word = self._words.get, self.word
        words = [w for w in _WORD.findall((title or "").casefold()) if len(w) > 1]
        title_words = [known(w) or word(w) for w in words]
        title_words.extend(_hash(f"b\x1f{a} {b}") for a, b in zip(words, words[1:]))
        lead_words = [known(w) or word(w) for w in _WORD.findall(lead(body).casefold()) if len(w) > 1]
        return title_words, [self.grams(w) for w in words], lead_words


def _distinct(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct values of ``keys`` and how often each occurs."""
    keys = np.sort(keys)
    if not len(keys):
        return keys, np.zeros(0, np.int64)
    starts = np.flatnonzero(np.concatenate(([True], keys[1:] != keys[:-1])))
    return keys[starts], np.diff(np.append(starts, len(keys)))


def _occurrences(hashes: np.ndarray, lengths: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (document, hash) pairs of a chunk, as ``document << 32 | hash`` keys, and their counts."""
    documents = np.repeat(np.arange(len(lengths), dtype=np.uint64), lengths)
    return _distinct((documents << np.uint64(32)) | hashes.astype(np.uint64))


def _project(keys: np.ndarray, counts: np.ndarray, idf: np.ndarray, n: int) -> np.ndarray:
    """Sublinear tf × idf of distinct (document, hash) pairs, hashed into signed dimensions; rows normalized."""
    documents = (keys >> np.uint64(32)).astype(np.int64)
    hashes = keys & np.uint64(0xFFFFFFFF)
    mixed = (hashes * _GOLDEN) & np.uint64(0xFFFFFFFF)
    dims = ((mixed >> np.uint64(8)) % np.uint64(DIMENSIONS)).astype(np.int64)
    signs = np.where(mixed >> np.uint64(31), -1.0, 1.0)
    weights = (1.0 + np.log(counts)) * idf[(hashes & np.uint64(BUCKETS - 1)).astype(np.int64)] * signs
    flat = np.bincount(documents * DIMENSIONS + dims, weights=weights, minlength=n * DIMENSIONS)
    return normalize(flat.reshape(n, DIMENSIONS).astype(np.float32))


def _document_frequencies(keys: np.ndarray) -> np.ndarray:
    """Per bucket, the documents with a feature of it, from ``document << 32 | hash`` keys."""
    present, _ = _distinct(keys & np.uint64(0xFFFFFFFF00000000 | (BUCKETS - 1)))
    return np.bincount((present & np.uint64(BUCKETS - 1)).astype(np.int64), minlength=BUCKETS)


class LexicalEmbedder:
    """TF-IDF (archive-learned document frequencies) of words, bigrams and character n-grams; see module."""

    dimensions = DIMENSIONS
    #: Open events merge from ``join_threshold`` + this (tuned on half the UCI dev stories, held on the other).
    merge_margin = 0.05

    def __init__(self, space: LexicalSpace, hasher: FeatureHasher | None = None):
        self.space = space
        self.name = f"lexical-v2-s{space.id}"
        self.join_threshold = space.join_threshold
        self.hasher = hasher or FeatureHasher()

    def embed(self, documents: Sequence[Document]) -> np.ndarray:
        return self.embed_and_count(documents)[0]

    def embed_and_count(self, documents: Sequence[Document]) -> tuple[np.ndarray, np.ndarray]:
        """The vectors of ``documents`` and, per document-frequency bucket, how many of them contain it."""
        n = len(documents)
        words: list[int] = []
        grams: list[np.ndarray] = []
        leads: list[int] = []
        lengths: tuple[list[int], list[int], list[int]] = ([], [], [])
        for title, body in documents:
            title_words, title_grams, lead_words = self.hasher.document(title, body)
            words.extend(title_words)
            grams.extend(title_grams)
            leads.extend(lead_words)
            lengths[0].append(len(title_words))
            lengths[1].append(sum(len(g) for g in title_grams))
            lengths[2].append(len(lead_words))
        hashes = (
            np.fromiter(words, np.uint32, len(words)),
            np.concatenate(grams) if grams else np.zeros(0, np.uint32),
            np.fromiter(leads, np.uint32, len(leads)),
        )
        occurrences = [_occurrences(h, k) for h, k in zip(hashes, lengths)]
        idf = self.space.idf
        word_vectors, gram_vectors, lead_vectors = (_project(keys, counts, idf, n) for keys, counts in occurrences)
        title = normalize(np.sqrt(1.0 - CHAR_SHARE) * word_vectors + np.sqrt(CHAR_SHARE) * gram_vectors)
        vectors = normalize(TITLE_SHARE * title + (1.0 - TITLE_SHARE) * lead_vectors)
        empty = ~vectors.any(axis=1)
        vectors = normalize(vectors - self.space.mean).astype(np.float32)
        vectors[empty] = 0.0
        return vectors, _document_frequencies(np.concatenate([keys for keys, _ in occurrences]))


def count_documents(documents: Sequence[Document], hasher: FeatureHasher | None = None) -> np.ndarray:
    """Per document-frequency bucket, how many of ``documents`` contain a feature of it."""
    empty = LexicalSpace(id=0, documents=0, document_frequencies=np.zeros(BUCKETS, np.int32))
    return LexicalEmbedder(empty, hasher).embed_and_count(documents)[1]
