"""Train the English sentiment model shipped as ``observatory_assets/defs/enrichment/sentiment_en.npz``.

A multinomial logistic regression (L2, L-BFGS) over binary word unigrams and bigrams seen at least
``--min-count`` times, plus the AFINN-rules score as one dense feature. The L2 strength is chosen by
3-fold cross-validation on the training file itself (the dev and held-out sets are not looked at).

    .venv/bin/python scripts/train_sentiment.py --train ../shared/data/sentiment-train-en.csv
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np
from scipy import sparse
from scipy.optimize import minimize

from observatory_assets.defs.enrichment.sentiment import (
    LABELS,
    MODEL_FILE,
    LexiconScorer,
    lexicon_feature,
    model_features,
    tokenize,
)

VERSION = "1"
#: The project's own Danish sentences (see ``scripts/data/README.md``), trained on by the Danish heads.
OWN_DANISH = Path(__file__).with_name("data") / "sentiment-da-own.csv"
L2_GRID = (4.0, 16.0, 64.0)
FOLDS = 3


def read(path: Path, language: str) -> list[dict]:
    """The rows of a labelled CSV (text, language, label) in one language."""
    with path.open(encoding="utf-8", newline="") as handle:
        return [row for row in csv.DictReader(handle) if row["language"] == language]


def design(texts: list[str], vocabulary: dict[str, int], lexicon: LexiconScorer) -> sparse.csr_matrix:
    """Rows of binary n-gram indicators, the lexicon score in the last column."""
    rows, cols, values = [], [], []
    for n, text in enumerate(texts):
        tokens = tokenize(text)
        for feature in model_features(tokens):
            column = vocabulary.get(feature)
            if column is not None:
                rows.append(n)
                cols.append(column)
                values.append(1.0)
        rows.append(n)
        cols.append(len(vocabulary))
        values.append(lexicon_feature(lexicon, tokens))
    return sparse.csr_matrix((values, (rows, cols)), shape=(len(texts), len(vocabulary) + 1), dtype=np.float64)


def fit(
    x: sparse.csr_matrix, y: np.ndarray, l2: float, row_weights: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Weights (features × classes) and bias minimising the mean cross-entropy + l2/n · ‖W‖²/2.

    ``row_weights`` counts each row that many times (n is then their sum): a row weighed 3 fits as three copies."""
    k = len(LABELS)
    d = x.shape[1]
    row_weights = np.ones(x.shape[0]) if row_weights is None else np.asarray(row_weights, dtype=np.float64)
    n = row_weights.sum()
    onehot = np.eye(k)[y] * row_weights[:, None]

    def loss(flat: np.ndarray) -> tuple[float, np.ndarray]:
        weights, bias = flat[: d * k].reshape(d, k), flat[d * k :]
        logits = x @ weights + bias
        logits -= logits.max(axis=1, keepdims=True)
        log_probabilities = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        residual = np.exp(log_probabilities) * row_weights[:, None] - onehot
        value = -(onehot * log_probabilities).sum() / n + l2 / n * 0.5 * (weights**2).sum()
        gradient = np.concatenate([((x.T @ residual) / n + l2 / n * weights).ravel(), residual.sum(axis=0) / n])
        return value, gradient

    result = minimize(loss, np.zeros(d * k + k), jac=True, method="L-BFGS-B", options={"maxiter": 500})
    return result.x[: d * k].reshape(d, k), result.x[d * k :]


def accuracy(x: sparse.csr_matrix, y: np.ndarray, weights: np.ndarray, bias: np.ndarray) -> float:
    return float(((x @ weights + bias).argmax(axis=1) == y).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=Path, required=True, help="CSV with text, language, label")
    parser.add_argument("--min-count", type=int, default=2)
    parser.add_argument("--out", type=Path, default=MODEL_FILE)
    args = parser.parse_args()

    rows = read(args.train, "en")
    texts = [r["text"] for r in rows]
    y = np.array([LABELS.index(r["label"]) for r in rows])
    counts = Counter(f for text in texts for f in model_features(tokenize(text)))
    features = sorted(f for f, c in counts.items() if c >= args.min_count)
    vocabulary = {f: n for n, f in enumerate(features)}
    lexicon = LexiconScorer("en")
    x = design(texts, vocabulary, lexicon)

    folds = np.random.default_rng(20).integers(0, FOLDS, len(texts))
    cross_validated = {}
    for l2 in L2_GRID:
        scores = []
        for fold in range(FOLDS):
            train, test = folds != fold, folds == fold
            weights, bias = fit(x[train], y[train], l2)
            scores.append(accuracy(x[test], y[test], weights, bias))
        cross_validated[l2] = round(float(np.mean(scores)), 4)
        print(f"l2={l2}: cross-validated accuracy {cross_validated[l2]}", file=sys.stderr)
    best = max(cross_validated, key=cross_validated.get)
    weights, bias = fit(x, y, best)
    np.savez_compressed(
        args.out,
        vocabulary=np.array(features),
        weights=weights[:-1].astype(np.float16),
        lexicon_weights=weights[-1].astype(np.float32),
        bias=bias.astype(np.float32),
        version=np.array(VERSION),
    )
    print(
        json.dumps(
            {
                "items": len(texts),
                "features": len(features),
                "cross_validated_accuracy": cross_validated,
                "l2": best,
                "out": str(args.out),
            }
        )
    )


if __name__ == "__main__":
    main()
