"""Sentiment per item: a score in [−1, 1], a label (negative / neutral / positive), the method and its version.

Two methods, chosen by the item's detected language, both computed offline from files in installed
packages (nothing is downloaded at run time):

* ``afinn-rules`` (Danish, and English as the lexicon feature of the model below): the AFINN word lists
  shipped in the ``afinn`` package (F. Å. Nielsen; ``AFINN-da-32``, ``AFINN-en-165``), one to three word
  phrases, with the rules of VADER and asent: a negation within the three words before a word flips it
  at reduced strength (×−0.74), an intensifier before it strengthens it (+0.293 of its sign), and after
  a contrast word (``men``, ``dog``, ``but``) the clause before counts half and the clause after 1.5 times.
  The sum is squashed into [−1, 1] as VADER does (``x / sqrt(x² + 15)``); a sentence with no opinion word
  is neutral.
* ``ngram-logreg`` (English): a multinomial logistic regression over word unigrams and bigrams plus the
  AFINN-rules score, trained by ``scripts/train_sentiment.py`` on ``sentiment-train-en.csv`` (TweetEval's
  sentiment test split less a held-out sample) and shipped as ``sentiment_en.npz``. Its score is
  P(positive) − P(negative); its label the most probable class.

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

LABELS = ("negative", "neutral", "positive")
#: Text read per item: the title and the lead of the body carry the tone; the rest costs time.
SENTIMENT_CHARS = 300
LEXICON_METHOD = "afinn-rules"
LEXICON_VERSION = "1"
MODEL_METHOD = "ngram-logreg"
MODEL_FILE = Path(__file__).with_name("sentiment_en.npz")
UNSUPPORTED = "unsupported language"
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

    def sentiments(self, texts: Sequence[Sequence[str]]) -> list[Sentiment]:
        """The sentiment of each tokenized text: the sign of its valence, and the valence squashed as score."""
        results = []
        for tokens in texts:
            valence = self.valence(tokens)
            score = valence / math.sqrt(valence * valence + _SQUASH_ALPHA)
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

    def sentiments(self, texts: Sequence[Sequence[str]]) -> list[Sentiment]:
        """The sentiment of many tokenized texts: one sparse product for the whole batch."""
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
        probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
        probabilities /= probabilities.sum(axis=1, keepdims=True)
        scores = probabilities[:, 2] - probabilities[:, 0]
        method = f"{MODEL_METHOD}/{self.version}"
        return [
            Sentiment(round(float(score), 4), LABELS[int(best)], method)
            for score, best in zip(scores, probabilities.argmax(axis=1))
        ]


def lexicon_feature(lexicon: LexiconScorer, tokens: Sequence[str]) -> float:
    """The lexicon's valence squashed to [−1, 1]: the model's one dense feature."""
    valence = lexicon.valence(tokens)
    return valence / math.sqrt(valence * valence + _SQUASH_ALPHA)


@lru_cache(maxsize=1)
def _scorers() -> dict:
    return {"da": LexiconScorer("da"), "en": NgramModel()}


def supported_languages() -> tuple[str, ...]:
    return tuple(sorted(_RULES))


def score_texts(texts: Iterable[tuple[str | None, str | None, str | None]]) -> list[Sentiment]:
    """The sentiment of each ``(language, title, text)``: the title and the lead of the text are read."""
    scorers = _scorers()
    results: list[Sentiment | None] = []
    batches: dict[str, list[tuple[int, list[str]]]] = {}
    for language, title, body in texts:
        if language is None or language not in scorers:
            reason = NO_LANGUAGE if language is None else f"{UNSUPPORTED}: {language}"
            results.append(Sentiment(None, None, None, reason))
            continue
        batches.setdefault(language, []).append(
            (len(results), tokenize(f"{title or ''}\n{(body or '')[:SENTIMENT_CHARS]}"))
        )
        results.append(None)
    for language, batch in batches.items():
        for (position, _), sentiment in zip(batch, scorers[language].sentiments([tokens for _, tokens in batch])):
            results[position] = sentiment
    return results
