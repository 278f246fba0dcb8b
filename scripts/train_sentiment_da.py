"""Train the Danish lexicon head shipped as ``observatory_assets/defs/enrichment/sentiment_da.npz``.

The ``fast`` method's Danish scorer: a multinomial logistic regression (the fit of ``train_sentiment.py``)
over the four AFINN-rules features of a sentence (its squashed valence, the valence's size, no opinion word
found, a negation present), weighed as the labelled sentences weigh them. Trained on the Danish rows of
``sentiment-dev.csv`` (189 Europarl sentences labelled by F. Å. Nielsen) and the project's own Danish
sentences (``scripts/data/sentiment-da-own.csv``). Before the final fit it prints the accuracy across the two
sources (fitted on one, scored on the other) and by 5-fold cross-validation over both: the only figures of
this head not measured on its training rows.

    .venv/bin/python scripts/train_sentiment_da.py --dev ../shared/data/sentiment-dev.csv
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from train_sentiment import OWN_DANISH, accuracy, fit, read

from observatory_assets.defs.enrichment.sentiment import (
    LABELS,
    LEXICON_HEAD_FILE,
    LexiconScorer,
    lexicon_features,
    tokenize,
)

VERSION = "1"
FOLDS = 5
SEED = 30


def cross_validated(x: np.ndarray, y: np.ndarray, l2: float) -> float:
    """Accuracy of 5-fold cross-validation (seeded folds)."""
    folds = np.random.default_rng(SEED).permutation(len(y)) % FOLDS
    predicted = np.zeros(len(y), dtype=int)
    for fold in range(FOLDS):
        weights, bias = fit(x[folds != fold], y[folds != fold], l2 * (folds != fold).sum())
        predicted[folds == fold] = (x[folds == fold] @ weights + bias).argmax(axis=1)
    return round(float((predicted == y).mean()), 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dev", type=Path, required=True, help="CSV whose Danish rows are trained on")
    parser.add_argument("--own", type=Path, default=OWN_DANISH, help="the project's own Danish sentences")
    parser.add_argument("--l2", type=float, default=1e-2, help="L2 strength against the mean cross-entropy")
    parser.add_argument("--out", type=Path, default=LEXICON_HEAD_FILE)
    args = parser.parse_args()

    lexicon = LexiconScorer("da")
    sources = {"europarl": read(args.dev, "da"), "own": read(args.own, "da")}
    x = {
        name: np.array([lexicon_features(lexicon, tokenize(r["text"])) for r in rows]) for name, rows in sources.items()
    }
    y = {name: np.array([LABELS.index(r["label"]) for r in rows]) for name, rows in sources.items()}
    across = {}
    for trained, scored in (("europarl", "own"), ("own", "europarl")):
        weights, bias = fit(x[trained], y[trained], args.l2 * len(y[trained]))
        across[f"{trained}->{scored}"] = round(accuracy(x[scored], y[scored], weights, bias), 4)
    every_x, every_y = np.concatenate(list(x.values())), np.concatenate(list(y.values()))
    summary = {
        "rows": {name: len(rows) for name, rows in sources.items()},
        "accuracy_across_sources": across,
        "cross_validated_accuracy": cross_validated(every_x, every_y, args.l2),
        "l2": args.l2,
        "out": str(args.out),
    }
    print(f"accuracy across sources: {across}, cross-validated {summary['cross_validated_accuracy']}", file=sys.stderr)
    weights, bias = fit(every_x, every_y, args.l2 * len(every_y))
    np.savez_compressed(
        args.out, weights=weights.astype(np.float32), bias=bias.astype(np.float32), version=np.array(VERSION)
    )
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
