"""Sentiment per item: a score in [−1, 1], a label (negative / neutral / positive), the method and its version.

Two settings (``OBSERVATORY_SENTIMENT``), both computed offline from files in installed packages (nothing
is downloaded at run time):

``fast`` (the default; over 10,000 items a second), by the item's detected language:

* ``afinn-rules`` (the lexicon features of every model here; alone it is ``LexiconScorer``): the AFINN word lists
  shipped in the ``afinn`` package (F. Å. Nielsen; ``AFINN-da-32``, ``AFINN-en-165``), one to three word
  phrases, with the rules of VADER and asent: a negation within the three words before a word flips it
  at reduced strength (×−0.74), an intensifier before it strengthens it (+0.293 of its sign), and after
  a contrast word (``men``, ``dog``, ``but``) the clause before counts half and the clause after 1.5 times.
  The sum is squashed into [−1, 1] as VADER does (``x / sqrt(x² + 15)``); a sentence with no opinion word
  is neutral.
* ``afinn-logreg`` (Danish): a logistic head over four features of those rules (the squashed valence, its
  size, no opinion word found, a negation present) weighed as labelled Danish sentences weigh them (a
  negation leans a sentence negative),
  trained by ``scripts/train_sentiment_da.py`` on the Danish Europarl sentences of ``sentiment-dev.csv`` and
  the project's own Danish sentences (``scripts/data/``), shipped as ``sentiment_da.npz``.
* ``ngram-logreg`` (English): a multinomial logistic regression over word unigrams and bigrams plus the
  AFINN-rules score, trained by ``scripts/train_sentiment.py`` on ``sentiment-train-en.csv`` (TweetEval's
  sentiment test split less a held-out sample) and shipped as ``sentiment_en.npz``. Its score is
  P(positive) − P(negative); its label the most probable class.

``e5`` (the quality option, extra ``[quality]``, 15–20 sentences a second on two cores): ``e5-logreg`` for Danish and
English, the e5 sentence vector beside these lexicon features (see ``sentiment_dense``).

Items of any other language get no score and no label, and say why (``unsupported language``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np
from scipy import sparse

from resources.settings import platform_settings

LABELS = ("negative", "neutral", "positive")
#: Text read per item: the title and the lead of the body carry the tone; the rest costs time.
SENTIMENT_CHARS = 300
LEXICON_METHOD = "afinn-rules"
LEXICON_VERSION = "1"
MODEL_METHOD = "ngram-logreg"
MODEL_FILE = Path(__file__).with_name("sentiment_en.npz")
LEXICON_HEAD_METHOD = "afinn-logreg"
LEXICON_HEAD_FILE = Path(__file__).with_name("sentiment_da.npz")
#: ``OBSERVATORY_SENTIMENT``: the default lexicon and n-gram methods, or the e5 head (see the module docstring).
METHODS = ("fast", "e5")
DEFAULT_METHOD = "fast"
UNSUPPORTED = "unsupported language"
#: An item as read for its sentiment: (title, text).
Document = tuple[str | None, str | None]
NO_LANGUAGE = "no language detected"

_TOKEN = re.compile(r"\w+(?:'\w+)?|[^\w\s]")
_NEGATION_SCALAR = -0.74
_BOOST = 0.293
_CONTRAST_BEFORE, _CONTRAST_AFTER = 0.5, 1.5
_SQUASH_ALPHA = 15.0

#: Per language: the AFINN list, negations, intensifiers and contrast words (from VADER's and asent's rules).
_RULES = {
    "da": (
        "AFINN-da-32.txt",
        {"ikke", "ikk", "aldrig", "ingen", "intet", "hverken", "ej", "uden"},
        {"meget", "virkelig", "utrolig", "utroligt", "særdeles", "yderst", "ekstremt", "enormt", "helt", "total"},
        {"men", "dog"},
    ),
    "en": (
        "AFINN-en-165.txt",
        {"not", "no", "never", "none", "nobody", "nothing", "neither", "nor", "without", "cannot", "can't",
         "don't", "doesn't", "didn't", "isn't", "wasn't", "aren't", "weren't", "won't", "wouldn't", "shouldn't",
         "couldn't", "ain't", "dont", "cant", "wont", "isnt", "didnt", "doesnt"},
        {"very", "really", "so", "extremely", "incredibly", "totally", "absolutely", "completely", "highly",
         "most", "super", "truly"},
        {"but", "however"},
    ),
}  # fmt: skip


def tokenize(text: str) -> list[str]:
    """Lower-case words (with an apostrophe part: ``don't``) and single punctuation or emoji characters."""
    return _TOKEN.findall(text.lower())


def read_tokens(title: str | None, body: str | None) -> list[str]:
    """The tokens read of an item: its title and the lead of its text (where a news item states its tone)."""
    return tokenize(f"{title or ''}\n{(body or '')[:SENTIMENT_CHARS]}")


@dataclass(frozen=True)
class Sentiment:
    """One item's sentiment; ``label`` and ``score`` are None when ``reason`` says why there is none."""

    score: float | None
    label: str | None
    method: str | None
    reason: str | None = None

    def columns(self) -> tuple[float | None, str | None, str | None, str | None]:
        """``raw_items.sentiment_score``, ``sentiment_label``, ``sentiment_method``, ``sentiment_reason``."""
        return self.score, self.label, self.method, self.reason


def from_logits(logits: np.ndarray, method: str) -> list[Sentiment]:
    """Sentiments from class logits (rows × LABELS): score P(positive) − P(negative), label the likeliest."""
    probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    scores = probabilities[:, 2] - probabilities[:, 0]
    return [
        Sentiment(round(float(score), 4), LABELS[int(best)], method)
        for score, best in zip(scores, probabilities.argmax(axis=1))
    ]


class LexiconScorer:
    """AFINN phrases with negation, intensifier and contrast rules (see the module docstring)."""

    def __init__(self, language: str) -> None:
        filename, negations, intensifiers, contrasts = _RULES[language]
        self.negations, self.intensifiers, self.contrasts = negations, intensifiers, contrasts
        self.words: dict[str, float] = {}
        self.phrases: dict[str, list[tuple[tuple[str, ...], float]]] = {}
        for line in resources.files("afinn").joinpath("data", filename).read_text(encoding="utf-8").splitlines():
            phrase, _, value = line.rpartition("\t")
            if not phrase:
                continue
            words = tuple(tokenize(phrase))
            if len(words) == 1:
                self.words[words[0]] = float(value)
            elif words:
                self.phrases.setdefault(words[0], []).append((words, float(value)))
        for candidates in self.phrases.values():
            candidates.sort(key=lambda pv: -len(pv[0]))
        self.starts = frozenset(self.words) | frozenset(self.phrases) | frozenset(self.contrasts)
        self.modifiers = frozenset(self.negations) | frozenset(self.intensifiers)

    def valence(self, tokens: Sequence[str]) -> float:
        """The summed valence of the opinion words in ``tokens`` after the rules (unbounded; 0 = none found)."""
        before = after = 0.0
        contrast_seen = False
        resume = 0  # a phrase matched covers the positions up to here
        starts = self.starts
        for position in [n for n, token in enumerate(tokens) if token in starts]:
            if position < resume:
                continue
            token = tokens[position]
            if token in self.contrasts:
                contrast_seen, before, after = True, before + after, 0.0
                continue
            value, width = self._match(tokens, position)
            resume = position + width
            if value:
                window = tokens[max(0, position - 3) : position]
                if not self.modifiers.isdisjoint(window):
                    if not self.intensifiers.isdisjoint(window):
                        value += math.copysign(_BOOST, value)
                    if not self.negations.isdisjoint(window):
                        value *= _NEGATION_SCALAR
                after += value
        if contrast_seen:
            return before * _CONTRAST_BEFORE + after * _CONTRAST_AFTER
        return after

    def _match(self, tokens: Sequence[str], position: int) -> tuple[float, int]:
        for words, value in self.phrases.get(tokens[position], ()):
            if tuple(tokens[position : position + len(words)]) == words:
                return value, len(words)
        return self.words.get(tokens[position], 0.0), 1

    def sentiments(self, documents: Sequence[Document]) -> list[Sentiment]:
        """The sentiment of each (title, text): the sign of its valence, and the valence squashed as score."""
        results = []
        for title, body in documents:
            valence = self.valence(read_tokens(title, body))
            score = squash(valence)
            label = "neutral" if valence == 0 else ("positive" if valence > 0 else "negative")
            results.append(Sentiment(round(score, 4), label, f"{LEXICON_METHOD}/{LEXICON_VERSION}"))
        return results


def model_features(tokens: Sequence[str]) -> list[str]:
    """The n-gram features of one text: its distinct unigrams and bigrams."""
    features = set(tokens)
    features.update(map(" ".join, zip(tokens, tokens[1:])))
    return list(features)


class NgramModel:
    """The shipped English logistic regression (``scripts/train_sentiment.py`` writes it)."""

    def __init__(self, path: Path = MODEL_FILE) -> None:
        with np.load(path, allow_pickle=False) as model:
            self.index = {feature: n for n, feature in enumerate(model["vocabulary"].tolist())}
            self.weights = model["weights"].astype(np.float32)
            self.lexicon_weights = model["lexicon_weights"].astype(np.float32)
            self.bias = model["bias"].astype(np.float32)
            self.version = str(model["version"])
        self.lexicon = LexiconScorer("en")

    def sentiments(self, documents: Sequence[Document]) -> list[Sentiment]:
        """The sentiment of many (title, text) documents: one sparse product for the whole batch."""
        texts = [read_tokens(title, body) for title, body in documents]
        rows, columns = [], []
        index = self.index
        for n, tokens in enumerate(texts):
            found = [index[feature] for feature in model_features(tokens) if feature in index]
            rows.extend([n] * len(found))
            columns.extend(found)
        indicators = sparse.csr_matrix(
            (np.ones(len(rows), dtype=np.float32), (rows, columns)), shape=(len(texts), len(self.index))
        )
        lexicon = np.array([lexicon_feature(self.lexicon, tokens) for tokens in texts], dtype=np.float32)
        logits = indicators @ self.weights + lexicon[:, None] * self.lexicon_weights + self.bias
        return from_logits(logits, f"{MODEL_METHOD}/{self.version}")


def squash(valence: float) -> float:
    """A summed valence mapped into [−1, 1] as VADER does."""
    return valence / math.sqrt(valence * valence + _SQUASH_ALPHA)


def lexicon_feature(lexicon: LexiconScorer, tokens: Sequence[str]) -> float:
    """The lexicon's valence squashed to [−1, 1]: the n-gram model's one dense feature."""
    return squash(lexicon.valence(tokens))


def lexicon_features(lexicon: LexiconScorer, tokens: Sequence[str]) -> tuple[float, float, float, float]:
    """The e5 head's lexicon features: the squashed valence, its size, 1 when no opinion word was found,
    1 when a negation word occurs (the tone a sentence vector tends to miss)."""
    valence = lexicon.valence(tokens)
    squashed = squash(valence)
    return squashed, abs(squashed), float(valence == 0), float(not lexicon.negations.isdisjoint(tokens))


class LexiconModel:
    """The ``fast`` Danish scorer: a logistic head over the lexicon's features (``lexicon_features``), weighed as
    labelled Danish sentences weigh them; ``scripts/train_sentiment_da.py`` writes it."""

    def __init__(self, path: Path = LEXICON_HEAD_FILE) -> None:
        with np.load(path, allow_pickle=False) as model:
            self.weights, self.bias = model["weights"].astype(np.float32), model["bias"].astype(np.float32)
            self.version = str(model["version"])
        self.lexicon = LexiconScorer("da")

    def sentiments(self, documents: Sequence[Document]) -> list[Sentiment]:
        """The sentiment of many (title, text) documents: one product for the batch."""
        features = np.array(
            [lexicon_features(self.lexicon, read_tokens(title, body)) for title, body in documents], dtype=np.float32
        ).reshape(len(documents), -1)
        return from_logits(features @ self.weights + self.bias, f"{LEXICON_HEAD_METHOD}/{self.version}")


@lru_cache(maxsize=2)
def _scorers(method: str) -> dict:
    """The scorer of each supported language for ``method`` (models load once per process)."""
    if method == "e5":
        from observatory_assets.defs.enrichment.sentiment_dense import DenseModel  # needs the [quality] extra

        return {language: DenseModel(language) for language in _RULES}
    if method == DEFAULT_METHOD:
        return {"da": LexiconModel(), "en": NgramModel()}
    raise ValueError(f"unknown sentiment method {method!r}; choose one of {', '.join(METHODS)}")


def supported_languages() -> tuple[str, ...]:
    return tuple(sorted(_RULES))


def score_texts(
    texts: Iterable[tuple[str | None, str | None, str | None]], method: str | None = None
) -> list[Sentiment]:
    """The sentiment of each ``(language, title, text)``: the title and the lead of the text are read.

    ``method`` is ``fast`` or ``e5``; None takes the ``OBSERVATORY_SENTIMENT`` setting."""
    scorers = _scorers(method or platform_settings().sentiment)
    results: list[Sentiment | None] = []
    batches: dict[str, list[tuple[int, Document]]] = {}
    for language, title, body in texts:
        if language is None or language not in scorers:
            reason = NO_LANGUAGE if language is None else f"{UNSUPPORTED}: {language}"
            results.append(Sentiment(None, None, None, reason))
            continue
        batches.setdefault(language, []).append((len(results), (title, body)))
        results.append(None)
    for language, batch in batches.items():
        for (position, _), sentiment in zip(batch, scorers[language].sentiments([doc for _, doc in batch])):
            results[position] = sentiment
    return results
