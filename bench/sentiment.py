"""Accuracy and speed of item sentiment on a labelled file, beside the untuned baselines.

Input: a CSV with ``text``, ``language`` (``da``, ``en``, …) and ``label`` (negative / neutral / positive).
Every row is scored by :func:`observatory_assets.defs.enrichment.sentiment.score_texts` (the function
``item_features`` calls, with the language given instead of detected) with ``--method`` (``fast``, the
default path, or ``e5``, the quality option), then accuracy and macro-F1 per
language are computed, with the same figures for two untuned baselines measured in the same run: the
majority class of that language in the file, and plain AFINN (the sign of the summed word values, no rules).
Prints one JSON object, with the speed as items per wall-clock second and per CPU second of the process.

    python bench/sentiment.py --labelled ../shared/data/sentiment-dev.csv [--method e5]

Both Danish heads were trained on the Danish rows of that file: their Danish figures there are training-row
figures, not test results (``scripts/train_sentiment_e5.py`` and ``train_sentiment_da.py`` print the figures on
rows not trained on). No model was trained on its English rows, but the ``e5`` head's v2 settings were chosen
with them in view: a tuned figure; the untuned one is the cross-validation the training script prints.
"""

import argparse
import csv
import json
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from observatory_assets.defs.enrichment.sentiment import (  # noqa: E402
    DEFAULT_METHOD,
    LABELS,
    METHODS,
    LexiconScorer,
    score_texts,
    tokenize,
)


def macro_f1(gold: list[str], predicted: list[str | None]) -> float:
    """The mean over the three labels of F1 (an item without a label counts as wrong)."""
    scores = []
    for label in LABELS:
        true_positive = sum(g == label and p == label for g, p in zip(gold, predicted))
        predicted_count = sum(p == label for p in predicted)
        gold_count = sum(g == label for g in gold)
        precision = true_positive / predicted_count if predicted_count else 0.0
        recall = true_positive / gold_count if gold_count else 0.0
        scores.append(2 * precision * recall / (precision + recall) if precision + recall else 0.0)
    return sum(scores) / len(scores)


def accuracy(gold: list[str], predicted: list[str | None]) -> float:
    return sum(g == p for g, p in zip(gold, predicted)) / len(gold)


def plain_afinn(scorer: LexiconScorer, text: str) -> str:
    """AFINN as shipped: the sign of the summed word values, no negation, intensifier or contrast rule."""
    total = sum(scorer.words.get(token, 0.0) for token in tokenize(text))
    return "neutral" if total == 0 else ("positive" if total > 0 else "negative")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labelled", type=Path, required=True, help="CSV with text, language, label")
    parser.add_argument("--method", choices=METHODS, default=DEFAULT_METHOD, help="the sentiment setting measured")
    args = parser.parse_args()
    with args.labelled.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))

    score_texts([("da", None, ""), ("en", None, "")], args.method)  # the models load once per process
    started, cpu_started = time.perf_counter(), time.process_time()
    results = score_texts(((row["language"], None, row["text"]) for row in rows), args.method)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started

    by_language: dict[str, list[int]] = {}
    for n, row in enumerate(rows):
        by_language.setdefault(row["language"], []).append(n)
    report: dict = {"accuracy": {}, "macro_f1": {}, "baselines": {}, "methods": {}}
    for language, indices in sorted(by_language.items()):
        gold = [rows[n]["label"] for n in indices]
        predicted = [results[n].label for n in indices]
        report["accuracy"][language] = round(accuracy(gold, predicted), 4)
        report["macro_f1"][language] = round(macro_f1(gold, predicted), 4)
        report["methods"][language] = sorted({results[n].method or results[n].reason for n in indices})
        majority = Counter(gold).most_common(1)[0][0]
        baselines = {"majority_class": [majority] * len(gold)}
        if language in ("da", "en"):
            scorer = LexiconScorer(language)
            baselines["afinn"] = [plain_afinn(scorer, rows[n]["text"]) for n in indices]
        report["baselines"][language] = {
            name: {"accuracy": round(accuracy(gold, labels), 4), "macro_f1": round(macro_f1(gold, labels), 4)}
            for name, labels in baselines.items()
        }
    report["method"] = args.method
    report["items"] = len(rows)
    report["items_per_s"] = round(len(rows) / max(seconds, 1e-9), 1)
    # on a shared machine the wall clock measures the neighbours too: the process's own CPU time does not
    report["items_per_cpu_s"] = round(len(rows) / max(cpu_seconds, 1e-9), 1)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
