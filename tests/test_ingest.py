"""Ingestion is idempotent and lossless: twice, forced, or killed half way and retried,
the tables end up exactly as after one clean run."""

import os
import signal
import subprocess
import sys
import time

import psycopg
from sqlalchemy import text

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
