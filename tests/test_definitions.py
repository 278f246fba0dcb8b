"""The code location loads and its parts fit together: lineage follows the spec, the assets of one
collection run share its partitions, and the daily digest publishes the day that has just ended."""

import importlib
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg

from observatory_assets.definitions import defs


def test_the_code_location_loads_with_every_resource_its_definitions_need():
    defs.validate_loadable(defs)


def test_lineage_follows_the_spec():
    graph = defs.resolve_asset_graph()

    def parents(name):
        return {key.to_user_string() for key in graph.get(dg.AssetKey(name)).parent_keys}

    assert parents("raw_items") == {"collection_runs"}
    assert "raw_items" in parents("item_features")
    assert "item_features" in parents("item_embeddings")
    assert "item_embeddings" in parents("events")
    assert "raw_items" in parents("content_exports")
    assert parents("trend_evidence") == {"events", "raw_items", "item_features", "item_embeddings"}
    assert parents("trend_snapshots") == {"trend_evidence"}


def test_partitioned_assets_share_the_collection_run_partitions():
    graph = defs.resolve_asset_graph()
    for name in ("raw_items", "item_features", "item_embeddings"):
        partitions = graph.get(dg.AssetKey(name)).partitions_def
        assert isinstance(partitions, dg.DynamicPartitionsDefinition) and partitions.name == "collection_runs"


def test_the_daily_digest_publishes_the_day_that_ended_at_six_utc():
    schedule = defs.resolve_schedule_def("daily_digest")
    with dg.instance_for_test() as instance:
        context = dg.build_schedule_context(
            instance=instance,
            scheduled_execution_time=datetime(2026, 11, 22, 6, 0, tzinfo=UTC),
            repository_def=defs.get_repository_def(),
        )
        (request,) = schedule.evaluate_tick(context).run_requests
    assert request.partition_key == "2026-11-21"


def _contents(domain_defs: dg.Definitions) -> dict[str, set[int]]:
    """The Dagster objects a Definitions holds, by kind (the same objects, however they were collected)."""
    kinds = ("assets", "asset_checks", "jobs", "schedules", "sensors")
    return {kind: {id(obj) for obj in getattr(domain_defs, kind) or ()} for kind in kinds}


def test_each_domain_definitions_py_names_everything_its_modules_define():
    """``load_from_defs_folder`` also collects what ``assets.py`` and ``jobs.py`` define at module level;
    each domain's ``definitions.py`` names all of it, so it stays the one place that says what a domain
    defines, and the code location is exactly the domains' definitions plus the sensors."""
    root = Path(__file__).resolve().parents[1] / "observatory_assets" / "defs"
    domains = sorted(p.name for p in root.iterdir() if (p / "definitions.py").exists())
    assert len(domains) == 11
    for domain in domains:
        modules = [
            importlib.import_module(f"observatory_assets.defs.{domain}.{name}")
            for name in ("assets", "jobs")
            if (root / domain / f"{name}.py").exists()
        ]
        declared = importlib.import_module(f"observatory_assets.defs.{domain}.definitions").defs
        assert _contents(declared) == _contents(dg.load_definitions_from_modules(modules)), domain
