"""The per-collection-run asset checks (one factory, lib.dagster.collection_run_check) look at the run their
materialization loaded: they pass on a clean run, fail with a hint on a broken one, and pass, saying so,
when checked before any run was materialized."""

import dagster as dg
from sqlalchemy import text

from observatory_assets.defs.enrichment.assets import (
    item_embeddings,
    item_embeddings_one_space,
    item_features,
    item_features_complete,
)
from observatory_assets.defs.enrichment.resources import EmbedderResource
from observatory_assets.defs.ingestion.assets import (
    raw_items,
    raw_items_default_partition,
    raw_items_rows_accounted_for,
    raw_items_unique_keys,
)
from observatory_assets.defs.ingestion.collect import SourceRequest, collect
from observatory_assets.lib.dagster import collection_run_partitions
from tests.support.helpers import load_rows, write

CHECKS = [raw_items_unique_keys, raw_items_default_partition, raw_items_rows_accounted_for]


def _evaluations(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {evaluation.check_name: evaluation for evaluation in result.get_asset_check_evaluations()}


def _run_checks_alone(instance, resources) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [raw_items, *CHECKS], instance=instance, resources=resources, selection=dg.AssetSelection.checks(*CHECKS)
    )


def test_checks_pass_on_a_clean_run_and_fail_with_a_hint_on_a_broken_one(engine, store, resources, tmp_path):
    rows = [
        '{"id": "1", "title": "Dated", "published_at": "2026-11-01T10:00:00Z"}',
        '{"id": "2", "title": "Undated"}',
        '{"id": "1", "title": "Same key again"}',
    ]
    path = write(tmp_path / "run.jsonl", "\n".join(rows) + "\n")
    run_id = collect(engine, store, [SourceRequest("checked", "jsonl", path=str(path))])
    with dg.DagsterInstance.ephemeral() as instance:
        before = _evaluations(_run_checks_alone(instance, resources))
        assert len(before) == 3 and all(e.passed and "no collection run" in e.description for e in before.values())

        instance.add_dynamic_partitions(collection_run_partitions.name, [str(run_id)])
        clean = dg.materialize([raw_items, *CHECKS], partition_key=str(run_id), instance=instance, resources=resources)
        evaluations = _evaluations(clean)
        assert set(evaluations) == {check.check_key.name for check in CHECKS}
        assert all(e.passed and e.metadata["collection_run"].value == run_id for e in evaluations.values())

        with engine.begin() as conn:  # a duplicate link lost: the run's counts no longer balance
            conn.execute(text("DELETE FROM item_duplicates WHERE collection_run_id = :r"), {"r": run_id})
        broken = _run_checks_alone(instance, resources)  # as from the UI: the latest materialized run
    accounted = _evaluations(broken)["raw_items_rows_accounted_for"]
    assert not accounted.passed and accounted.description == "the collection run's counts do not balance"
    assert accounted.metadata["unbalanced_runs"].value


def test_enrichment_checks_look_at_the_run_and_warn_about_vectors_of_another_space(engine, store, resources, tmp_path):
    rows = [{"key": str(n), "title": f"Headline number {n}", "text": "Council votes on the budget.", "source": "s",
             "published_at": "2026-11-01T10:00:00Z"} for n in range(3)]  # fmt: skip
    run_id = load_rows(engine, store, tmp_path, rows)
    bound = {**resources, "embedder": EmbedderResource()}
    assets = [item_features, item_embeddings, item_features_complete, item_embeddings_one_space]
    with dg.DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions(collection_run_partitions.name, [str(run_id)])
        enriched = _evaluations(dg.materialize(assets, partition_key=str(run_id), resources=bound, instance=instance))
        assert set(enriched) == {"item_features_complete", "item_embeddings_one_space"}
        assert all(e.passed and e.metadata["collection_run"].value == run_id for e in enriched.values())
        with engine.begin() as conn:
            conn.execute(text("UPDATE item_embeddings SET embedder = 'another-space'"))
        selection = dg.AssetSelection.checks(item_embeddings_one_space)
        rechecked = _evaluations(dg.materialize(assets, resources=bound, instance=instance, selection=selection))
    one_space = rechecked["item_embeddings_one_space"]
    assert not one_space.passed and one_space.severity == dg.AssetCheckSeverity.WARN
    assert one_space.description == "re-materialize item_embeddings for the affected collection runs"
