"""The bundled demo sample tells true stories: it is what its generator writes, every event the pipeline
makes of it holds one story, and every evidence line names an event whose items carry its terms and title."""

import filecmp

from sqlalchemy import text

from observatory_assets.defs.enrichment.embedders import make_embedder
from observatory_assets.defs.enrichment.embeddings import embed_run
from observatory_assets.defs.enrichment.features import featurize_run
from observatory_assets.defs.events.clustering import ClusteringParams, cluster_events
from observatory_assets.defs.events.quality import bcubed, labelled_clustering_score
from observatory_assets.defs.ingestion.collect import SourceRequest, collect
from observatory_assets.defs.ingestion.demo_data import (
    LABELS_FILE,
    load_sample_stories,
    sample_story_labels,
    write_demo_dataset,
)
from observatory_assets.defs.ingestion.loading import ingest_collection_run
from observatory_assets.defs.trends.catalog import sync_trends
from observatory_assets.defs.trends.evidence import update_evidence
from tests.support.helpers import ROOT

SAMPLE = ROOT / "observatory_assets" / "sample_data"


def test_the_bundled_sample_and_its_labels_are_what_the_generator_writes(tmp_path):
    write_demo_dataset(tmp_path / "sample", labels=tmp_path / "labels.csv")
    names = sorted(p.name for p in SAMPLE.iterdir())
    assert sorted(p.name for p in (tmp_path / "sample").iterdir()) == names
    assert filecmp.cmpfiles(SAMPLE, tmp_path / "sample", names, shallow=False)[0] == names
    assert filecmp.cmp(LABELS_FILE, tmp_path / "labels.csv", shallow=False)


def test_no_sentence_of_a_story_is_shared_with_another_and_every_label_names_a_story():
    stories = load_sample_stories()
    sentences = [s for story in stories for s in story.headlines + story.facts]
    told_again = [s for s in stories if not s.brief]
    assert len(sentences) == len(set(sentences)) and len({s.story_id for s in told_again}) == len(told_again)
    known = {s.story_id for s in stories}
    assert {story for story in sample_story_labels().values() if not story.endswith("-hostile")} == known


def test_bcubed_scores_one_event_per_story_as_one_and_penalizes_merging_and_splitting():
    truth = {1: "a", 2: "a", 3: "b", 4: "b"}
    assert bcubed(truth, {1: 10, 2: 10, 3: 20, 4: 20}) == (1.0, 1.0)
    assert bcubed(truth, dict.fromkeys(truth, 10)) == (0.5, 1.0)
    assert bcubed(truth, {1: 1, 2: 2, 3: 3, 4: 4}) == (1.0, 0.5)


def test_the_sample_clusters_into_its_stories_and_evidence_lands_on_the_right_events(engine, store, tmp_path):
    for name, fmt, path in write_demo_dataset(tmp_path / "sample"):
        run_id = collect(engine, store, [SourceRequest(name, fmt, path=str(path))])
        ingest_collection_run(engine, store, run_id)
        featurize_run(engine, run_id)
    embedder = make_embedder("lexical", engine)
    with engine.connect() as conn:
        runs = conn.execute(text("SELECT id FROM collection_runs ORDER BY id")).scalars().all()
    for run_id in runs:
        embed_run(engine, embedder, run_id)
    params = ClusteringParams(threshold=embedder.join_threshold, merge_margin=embedder.merge_margin)
    cluster_events(engine, embedder.name, embedder.dimensions, params)
    score = labelled_clustering_score(engine, sample_story_labels())
    assert score["items"] > 300 and score["bcubed_f1"] >= 0.95, score

    sync_trends(engine, ROOT / "trends")
    update_evidence(engine)
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                """
                SELECT t.name, e.event_id, e.matched_terms, v.title,
                       v.title IN (SELECT r.title FROM event_items x JOIN raw_items r ON r.id = x.item_id
                                    WHERE x.event_id = e.event_id) AS title_of_a_member,
                       (SELECT bool_and(EXISTS (
                                  SELECT 1 FROM event_items x JOIN raw_items r ON r.id = x.item_id
                                   WHERE x.event_id = e.event_id
                                     AND r.search_vector @@ phraseto_tsquery(r.text_search_config, term)))
                          FROM unnest(e.matched_terms) AS term) AS terms_in_members
                  FROM trend_evidence e JOIN trends t ON t.id = e.trend_id JOIN events v ON v.id = e.event_id
                 WHERE e.retracted_at IS NULL
                """
            )
        ).all()
    assert {r.name for r in rows} == {p.stem for p in (ROOT / "trends").glob("*.yaml")}
    assert all(r.title_of_a_member and r.terms_in_members for r in rows), rows
