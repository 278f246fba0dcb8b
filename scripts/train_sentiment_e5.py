"""Train the ``e5`` sentiment head shipped as ``observatory_assets/defs/enrichment/sentiment_e5.npz``.

A multinomial logistic regression per language (L2, L-BFGS; the fit of ``train_sentiment.py``) over each
sentence's multilingual-e5-small vector and the lexicon features of its language. The English head is
trained on the English rows alone, the Danish head on all of these:

* the English tweets of ``sentiment-train-en.csv`` (TweetEval's sentiment test split less a held-out sample);
* the Danish rows of ``sentiment-dev.csv`` (189 Europarl sentences labelled by F. Å. Nielsen);
* ``scripts/data/sentiment-da-own.csv`` (158 Danish sentences written for this project, news and web style);

each Danish row counted ``--danish-weight`` times. Each head weighs each class by its frequency among its
rows to the power ``-class_power`` (0.5: halfway to balanced classes): the training tweets are half neutral
and a fifth positive, the dev tweets two-fifths positive, and news items have a balance of their own; a head
fitted to one set's balance loses accuracy on another (the v1 heads, unweighted, scored 0.707 by
cross-validation on the training tweets and 0.665 on the dev tweets). Before the final fit it prints accuracy on rows the head
did not see: the Danish head fitted with one Danish source and scored on the other, and by 5-fold
cross-validation over the Danish rows; the English head by 3-fold cross-validation over the English rows.

    .venv/bin/python scripts/train_sentiment_e5.py --train ../shared/data/sentiment-train-en.csv \\
        --dev ../shared/data/sentiment-dev.csv [--vectors e5-cache.npz]

The defaults rebuild the shipped heads: all 11,684 English rows (``--english-rows N`` takes a seeded sample),
each Danish row counted 34 times (so the Danish rows weigh about as much as the English ones in the Danish
head), L2 1e-4 and class power 0.5, chosen among L2 3e-5 / 1e-4 / 3e-4 and power 0 / 0.5 / 1 by 3-fold
cross-validation on the training tweets, by the English dev tweets of ``sentiment-dev.csv`` (never trained on,
but looked at to choose: the dev figure is a tuned one) and by the Danish sources scored across each other.
``--vectors`` keeps the e5 vectors between runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from train_sentiment import OWN_DANISH, fit, read

from observatory_assets.defs.enrichment.embedders import shared_e5
from observatory_assets.defs.enrichment.sentiment import LABELS, LexiconScorer
from observatory_assets.defs.enrichment.sentiment_dense import DENSE_FILE, dense_design

VERSION = "2"
LANGUAGES = ("da", "en")
SEED = 30


def embed(documents: list[tuple[None, str]], cache: Path | None, batch: int = 32) -> np.ndarray:
    """The e5 vectors of the documents, those already in the ``cache`` file (text → vector) taken from it."""
    known: dict[str, np.ndarray] = {}
    if cache is not None and cache.exists():
        with np.load(cache, allow_pickle=False) as stored:
            known = dict(zip(stored["texts"].tolist(), stored["vectors"]))
    missing = list(dict.fromkeys(text for _, text in documents if text not in known))
    model = shared_e5()
    for start in range(0, len(missing), batch):
        texts = missing[start : start + batch]
        known.update(zip(texts, model.raw([(None, text) for text in texts])))
    if cache is not None and missing:
        np.savez(cache, texts=np.array(list(known)), vectors=np.stack(list(known.values())))
    return np.stack([known[text] for _, text in documents]) if documents else np.zeros((0, 384), np.float32)


def design(rows: list[dict], language: str, cache: Path | None) -> np.ndarray:
    """The heads' input rows for sentences of one language: e5 vector, then lexicon features."""
    documents = [(None, row["text"]) for row in rows]
    return dense_design(embed(documents, cache), LexiconScorer(language), documents)


@dataclass(frozen=True)
class Head:
    """How one language's head is fitted: each Danish row counted ``danish_weight`` times (0: English rows
    only), each class weighed by its frequency to the power ``-class_power``, the L2 strength ``l2``."""

    danish_weight: int
    l2: float
    class_power: float = 0.0


def weighted_fit(x: np.ndarray, y: np.ndarray, danish: np.ndarray, head: Head):
    """The head's fit on these rows (see ``Head``)."""
    rows = np.where(danish, head.danish_weight, 1).astype(np.float64)
    frequency = np.bincount(y, weights=rows, minlength=len(LABELS)) / rows.sum()
    rows *= np.maximum(frequency, 1e-9)[y] ** -head.class_power
    keep = rows > 0
    return fit(x[keep], y[keep], head.l2 * rows[keep].sum(), rows[keep])


def scored(x, y, danish, train: np.ndarray, test: np.ndarray, head: Head) -> float:
    """Accuracy on the ``test`` rows of a head fitted on the ``train`` rows."""
    weights, bias = weighted_fit(x[train], y[train], danish[train], head)
    return float(((x[test] @ weights + bias).argmax(axis=1) == y[test]).sum())


def held_out_figures(x, y, danish, origin, heads: dict[str, Head]) -> dict[str, float]:
    """Accuracy on rows no head saw: the Danish head fitted on one Danish source and scored on the other,
    and by 5-fold cross-validation over the Danish rows; the English head by 3 folds over the English rows."""
    figures = {}
    for source, other in (("europarl", "own"), ("own", "europarl")):
        figures[f"da {source}->{other}"] = scored(x, y, danish, origin != other, origin == other, heads["da"])
        figures[f"da {source}->{other}"] /= (origin == other).sum()
    for name, held, folds, head in (("da 5-fold", danish, 5, heads["da"]), ("en 3-fold", ~danish, 3, heads["en"])):
        rows = np.flatnonzero(held)
        fold_of = np.random.default_rng(SEED).permutation(len(rows)) % folds
        correct = 0.0
        for fold in range(folds):
            train = np.ones(len(x), dtype=bool)
            train[rows[fold_of == fold]] = False
            correct += scored(x, y, danish, train, rows[fold_of == fold], head)
        figures[name] = correct / len(rows)
    return {name: round(float(value), 4) for name, value in figures.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=Path, required=True, help="English CSV with text, language, label")
    parser.add_argument("--dev", type=Path, required=True, help="CSV whose Danish rows are trained on")
    parser.add_argument("--own", type=Path, default=OWN_DANISH, help="the project's own Danish sentences")
    parser.add_argument("--english-rows", type=int, default=0, help="a seeded sample of the English rows (0: all)")
    parser.add_argument("--danish-weight", type=int, default=34, help="times each Danish row is counted")
    parser.add_argument("--l2", type=float, default=1e-4, help="L2 strength against the mean cross-entropy")
    parser.add_argument("--class-power", type=float, default=0.5, help="classes weighed by frequency^-power")
    parser.add_argument("--vectors", type=Path, default=None, help="cache of e5 vectors (text → vector), .npz")
    parser.add_argument("--out", type=Path, default=DENSE_FILE)
    args = parser.parse_args()

    english, europarl, own = read(args.train, "en"), read(args.dev, "da"), read(args.own, "da")
    english = [english[n] for n in np.random.default_rng(SEED).permutation(len(english))[: args.english_rows or None]]
    rows = english + europarl + own
    x = np.concatenate([design(english, "en", args.vectors), design(europarl + own, "da", args.vectors)])
    y = np.array([LABELS.index(row["label"]) for row in rows])
    danish = np.arange(len(rows)) >= len(english)
    origin = np.array(["en"] * len(english) + ["europarl"] * len(europarl) + ["own"] * len(own))
    heads = {"da": Head(args.danish_weight, args.l2, args.class_power), "en": Head(0, args.l2, args.class_power)}
    figures = held_out_figures(x, y, danish, origin, heads)
    print(f"accuracy on rows the head did not see: {figures}", file=sys.stderr)

    fitted = [weighted_fit(x, y, danish, heads[language]) for language in LANGUAGES]
    np.savez_compressed(
        args.out,
        weights=np.stack([weights for weights, _ in fitted]).astype(np.float32),
        biases=np.stack([bias for _, bias in fitted]).astype(np.float32),
        languages=np.array(LANGUAGES),
        version=np.array(VERSION),
    )
    summary = {
        "rows": {"en": len(english), "europarl": len(europarl), "own": len(own)},
        "held_out_accuracy": figures,
        "english_rows": args.english_rows,
        "danish_weight": args.danish_weight,
        "l2": args.l2,
        "class_power": args.class_power,
        "out": str(args.out),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
