"""Ingestion is idempotent and lossless: twice, forced, or killed half way and retried,
the tables end up exactly as after one clean run."""

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import psycopg
from sqlalchemy import text

from observatory_assets.defs.ingestion import loading
from observatory_assets.defs.ingestion.collect import SourceRequest, collect
from observatory_assets.defs.ingestion.demo_data import iter_items, write_demo_dataset, write_jsonl
from observatory_assets.defs.ingestion.loading import ingest_collection_run
from resources.postgres import engine_for
from resources.settings import as_libpq_dsn
from tests.support.helpers import ROOT, create_database, drop_database

# Surrogate ids come from a sequence (not transactional), so tables are compared on natural keys.
SNAPSHOT = {
    "raw_items": "SELECT collection_run_id, record_no, source_id, external_id, url, title, text, author, published_at, "
                 "language, content_hash, raw_metadata::text, tableoid::regclass::text FROM raw_items",
    "item_keys": "SELECT collection_run_id, record_no, source_id, external_id, content_hash FROM item_keys",
    "item_duplicates": "SELECT d.collection_run_id, d.record_no, d.matched_on, k.collection_run_id, k.record_no "
                       "FROM item_duplicates d JOIN item_keys k ON k.item_id = d.duplicate_of_item_id",
    "rejected_items": "SELECT collection_run_id, record_no, reason, detail, payload, payload_key FROM rejected_items",
    "collection_runs": "SELECT id, items_collected, items_loaded, items_duplicate, items_rejected FROM collection_runs",
}  # fmt: skip


def snapshot(engine) -> dict[str, list]:
    with engine.connect() as conn:
        return {name: sorted(map(tuple, conn.execute(text(query)).all()), key=repr) for name, query in SNAPSHOT.items()}


def _collect_demo(engine, store, tmp_path) -> list[int]:
    return [
        collect(engine, store, [SourceRequest(name, fmt, path=str(path))])
        for name, fmt, path in write_demo_dataset(tmp_path / "demo", items_per_source=30)
    ]


def test_every_delivered_row_is_loaded_a_duplicate_or_rejected(engine, store, tmp_path):
    for run_id in _collect_demo(engine, store, tmp_path):
        result = ingest_collection_run(engine, store, run_id)
        assert result.accounted_for and result.loaded > 0 or result.delivered == result.rejected
    with engine.connect() as conn:
        items, keys = conn.execute(
            text("SELECT (SELECT count(*) FROM raw_items), (SELECT count(*) FROM item_keys)")
        ).one()
        collected = conn.execute(text("SELECT sum(items_collected) FROM collection_runs")).scalar()
        outcomes = conn.execute(
            text("SELECT (SELECT count(*) FROM item_duplicates) + (SELECT count(*) FROM rejected_items)")
        ).scalar()
    assert items == keys and items + outcomes == collected


def test_ingesting_twice_or_forced_changes_nothing(engine, store, tmp_path):
    run_ids = _collect_demo(engine, store, tmp_path)
    for run_id in run_ids:
        ingest_collection_run(engine, store, run_id)
    first = snapshot(engine)
    again = [ingest_collection_run(engine, store, run_id) for run_id in run_ids]
    assert all(result.skipped for result in again)
    assert snapshot(engine) == first
    forced = [ingest_collection_run(engine, store, run_id, force=True) for run_id in run_ids]
    assert not any(result.skipped for result in forced) and sum(r.new_items for r in forced) == 0
    assert snapshot(engine) == first


def test_tampered_counts_are_detected_and_reloaded(engine, store, tmp_path):
    run_id = _collect_demo(engine, store, tmp_path)[0]
    ingest_collection_run(engine, store, run_id)
    before = snapshot(engine)
    with engine.begin() as conn:
        deleted = conn.execute(text("DELETE FROM item_duplicates WHERE collection_run_id = :r"), {"r": run_id}).rowcount
    assert deleted > 0
    result = ingest_collection_run(engine, store, run_id)
    assert not result.skipped and snapshot(engine) == before


def _backend_busy_with(database_url: str, fragment: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    with psycopg.connect(as_libpq_dsn(database_url), autocommit=True) as conn:
        while time.monotonic() < deadline:
            queries = conn.execute(
                "SELECT query FROM pg_stat_activity WHERE state = 'active' AND pid <> pg_backend_pid()"
            )
            if any(fragment in query for (query,) in queries):
                return True
            time.sleep(0.02)
    return False


def test_a_run_killed_half_way_and_retried_equals_one_clean_run(
    pg_server, migrated_template, database_url, engine, store, tmp_path
):
    payload = tmp_path / "big.jsonl"
    write_jsonl(payload, iter_items(30_000, seed=3, text_chars=300))
    run_id = collect(engine, store, [SourceRequest("bulk", "jsonl", path=str(payload))])
    script = (
        "import sys; from resources.postgres import engine_for; from resources.object_store import LocalObjectStore;"
        "from observatory_assets.defs.ingestion.loading import ingest_collection_run;"
        "ingest_collection_run(engine_for(sys.argv[1]), LocalObjectStore(sys.argv[2]), int(sys.argv[3]))"
    )
    worker = subprocess.Popen([sys.executable, "-c", script, database_url, str(store.root), str(run_id)], cwd=ROOT)
    try:
        assert _backend_busy_with(database_url, "COPY staged", timeout=60), "the worker never reached the COPY"
        time.sleep(0.3)
        os.kill(worker.pid, signal.SIGKILL)
    finally:
        worker.wait()
    assert worker.returncode == -signal.SIGKILL
    with engine.connect() as conn:  # the killed transaction left nothing behind
        assert conn.execute(text("SELECT count(*) FROM item_keys")).scalar() == 0
    ingest_collection_run(engine, store, run_id)
    retried = snapshot(engine)

    clean_url = create_database(pg_server, "clean_reference", template=migrated_template)
    try:
        clean = engine_for(clean_url)
        clean_run = collect(clean, store, [SourceRequest("bulk", "jsonl", path=str(payload))])
        assert clean_run == run_id
        ingest_collection_run(clean, store, clean_run)
        reference = snapshot(clean)
    finally:
        drop_database(pg_server, "clean_reference")
    # payload keys are per run and the same run id, so even the rejects' object keys match
    assert retried == reference
    assert len(retried["raw_items"]) > 25_000


def _outcomes(engine, run_id) -> dict[str, dict[int, str]]:
    """Per record of a run: the item's title, the rejection's reason (a record must have one, not both)."""
    with engine.connect() as conn:
        items = dict(
            conn.execute(
                text("SELECT record_no, title FROM raw_items WHERE collection_run_id = :r"), {"r": run_id}
            ).all()
        )
        keys = conn.execute(text("SELECT count(*) FROM item_keys WHERE collection_run_id = :r"), {"r": run_id}).scalar()
        rejects = dict(
            conn.execute(
                text("SELECT record_no, reason FROM rejected_items WHERE collection_run_id = :r"), {"r": run_id}
            ).all()
        )
    assert keys == len(items) and not items.keys() & rejects.keys()
    return {"items": items, "rejects": rejects}


def _fetched_days_ago(engine, run_id, days: int) -> None:
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE collection_runs SET completed_at = now() - make_interval(days => :d) WHERE id = :r"),
            {"d": days, "r": run_id},
        )


def test_dates_are_judged_against_the_fetch_time_and_a_forced_reingest_replaces_outcomes(engine, store, tmp_path):
    two_days_ago = (datetime.now(UTC) - timedelta(days=2)).isoformat()
    payload = tmp_path / "late.jsonl"
    payload.write_text(
        json.dumps({"id": "a", "title": "Always fine", "published_at": "2026-01-01T00:00:00Z"})
        + "\n"
        + json.dumps({"id": "b", "title": "Two days old", "published_at": two_days_ago})
        + "\n"
    )
    run_id = collect(engine, store, [SourceRequest("late", "jsonl", path=str(payload))])
    _fetched_days_ago(engine, run_id, 5)  # fetched five days ago: item b was three days in the future then
    first = ingest_collection_run(engine, store, run_id)
    assert (first.loaded, first.rejected) == (1, 1)
    assert _outcomes(engine, run_id) == {"items": {1: "Always fine"}, "rejects": {2: "future_date"}}
    forced = ingest_collection_run(engine, store, run_id, force=True)
    assert (forced.loaded, forced.rejected) == (1, 1) and _outcomes(engine, run_id)["rejects"] == {2: "future_date"}

    _fetched_days_ago(engine, run_id, 1)  # a corrected fetch time: b is in the past now
    forced = ingest_collection_run(engine, store, run_id, force=True)
    assert (forced.delivered, forced.loaded, forced.rejected) == (2, 2, 0)
    assert _outcomes(engine, run_id) == {"items": {1: "Always fine", 2: "Two days old"}, "rejects": {}}
    assert ingest_collection_run(engine, store, run_id).skipped  # the recorded counts balance

    _fetched_days_ago(engine, run_id, 5)  # and back: the rejection replaces the item
    forced = ingest_collection_run(engine, store, run_id, force=True)
    assert (forced.loaded, forced.rejected) == (1, 1)
    assert _outcomes(engine, run_id) == {"items": {1: "Always fine"}, "rejects": {2: "future_date"}}
    assert ingest_collection_run(engine, store, run_id).skipped


def test_a_new_loader_version_reloads_a_run_without_force(engine, store, tmp_path, monkeypatch):
    run_id = _collect_demo(engine, store, tmp_path)[0]
    ingest_collection_run(engine, store, run_id)
    before = snapshot(engine)
    assert ingest_collection_run(engine, store, run_id).skipped
    monkeypatch.setattr(loading, "LOADER_VERSION", loading.LOADER_VERSION + "-next")
    reloaded = ingest_collection_run(engine, store, run_id)
    assert not reloaded.skipped and reloaded.accounted_for and snapshot(engine) == before
    assert ingest_collection_run(engine, store, run_id).skipped
