"""Benchmark: what the raw_items checks of one collection run cost as the archive grows.

For each archive size (default 10,000 and 1,000,000 items already loaded, written
straight into ``item_keys`` / ``raw_items`` with set-based SQL), a real 1,000-item
collection run is collected and materialized through Dagster in-process with its
asset checks, and the check SQL is timed on its own both ways:

* ``per_run`` — the checks as they are: scoped to the run's partition;
* ``archive`` — the same invariants over the whole archive, which is what every
  ingestion used to pay (the SQL the weekly ``integrity_audit`` runs now).

Target: the per-run cost does not grow with the archive (large vs small within 1.5×).
Prints one JSON object. Usage: python bench/checks.py [--small 10000] [--large 1000000] [--run-items 1000]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import dagster as dg  # noqa: E402
from common import payload_directory, scratch_database  # noqa: E402
from sqlalchemy import text  # noqa: E402

from observatory_assets.defs.ingestion import definitions as ingestion  # noqa: E402
from observatory_assets.defs.ingestion.collect import SourceRequest, collect  # noqa: E402
from observatory_assets.defs.ingestion.demo_data import iter_items, write_jsonl  # noqa: E402
from observatory_assets.defs.ingestion.integrity import (  # noqa: E402
    default_partition_rows,
    key_conflicts,
    unbalanced_runs,
)
from observatory_assets.defs.ingestion.jobs import ingest_job  # noqa: E402
from observatory_assets.lib.dagster import collection_run_partitions  # noqa: E402
from resources import ObjectStoreResource, PostgresResource  # noqa: E402
from resources.object_store import LocalObjectStore  # noqa: E402
from resources.postgres import engine_for  # noqa: E402

ITEMS_PER_ARCHIVE_RUN = 10_000

# One archive run per 10,000 items, each item with its own keys and a publication date spread over 2026.
FILL_ARCHIVE = """
WITH src AS (
    INSERT INTO sources (name, type) VALUES ('archive', 'jsonl')
    ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name RETURNING id
), runs AS (
    INSERT INTO collection_runs (status, completed_at, ingested_at, items_collected, items_loaded)
    SELECT 'completed', now(), now(), :per_run, :per_run FROM generate_series(1, :runs)
    RETURNING id
), numbered AS (
    SELECT row_number() OVER (ORDER BY id) - 1 AS k, id FROM runs
), keys AS (
    INSERT INTO item_keys (source_id, external_id, content_hash, published_at, collection_run_id, record_no)
    SELECT (SELECT id FROM src), 'archive-' || n, sha256(('archive-' || n)::bytea),
           timestamptz '2026-01-01' + (n % 330) * interval '1 day', r.id, n % :per_run + 1
      FROM generate_series(0, :items - 1) AS n JOIN numbered r ON r.k = n / :per_run
    RETURNING item_id, source_id, external_id, content_hash, published_at, collection_run_id, record_no
)
INSERT INTO raw_items (id, source_id, collection_run_id, record_no, external_id, title, text, published_at,
                       fetched_at, content_hash)
SELECT item_id, source_id, collection_run_id, record_no, external_id, 'Archived item ' || external_id,
       repeat('archived text ', 20), published_at, now(), content_hash
  FROM keys
"""


def fill_archive(url: str, items: int) -> float:
    started = time.perf_counter()
    with engine_for(url).begin() as conn:
        conn.execute(
            text(
                "SELECT ensure_month_partition('raw_items'::regclass, d::date) "
                "FROM generate_series(date '2026-01-01', date '2026-12-01', interval '1 month') d"
            )
        )
        runs = -(-items // ITEMS_PER_ARCHIVE_RUN)
        conn.execute(text(FILL_ARCHIVE), {"items": items, "runs": runs, "per_run": ITEMS_PER_ARCHIVE_RUN})
        conn.execute(text("ANALYZE"))
    return time.perf_counter() - started


def timed_checks(url: str, run_id: int | None, repeat: int = 3) -> float:
    """The fastest of ``repeat`` evaluations of the three raw_items invariants (warm cache)."""
    best = float("inf")
    with engine_for(url).connect() as conn:
        for _ in range(repeat):
            started = time.perf_counter()
            key_conflicts(conn, run_id)
            default_partition_rows(conn, run_id)
            unbalanced_runs(conn, run_id)
            best = min(best, time.perf_counter() - started)
    return best


def measure(archive_items: int, run_items: int) -> dict:
    with scratch_database() as url, payload_directory("bench-checks-") as tmp:
        fill_s = fill_archive(url, archive_items)
        payload = Path(tmp) / "run.jsonl"
        write_jsonl(payload, iter_items(run_items, seed=archive_items % 97))
        engine, store = engine_for(url), LocalObjectStore(Path(tmp) / "objects")
        run_id = collect(engine, store, [SourceRequest("bench-run", "jsonl", path=str(payload))])
        resources = {
            "postgres": PostgresResource(url=url),
            "object_store": ObjectStoreResource(local_root=str(Path(tmp) / "objects")),
        }
        defs = dg.Definitions.merge(ingestion.defs, dg.Definitions(resources=resources))
        with dg.DagsterInstance.ephemeral() as instance:
            instance.add_dynamic_partitions(collection_run_partitions.name, [str(run_id)])
            started = time.perf_counter()
            result = defs.resolve_job_def(ingest_job.name).execute_in_process(
                instance=instance,
                partition_key=str(run_id),
                run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
                raise_on_error=False,
            )
            materialize_s = time.perf_counter() - started
            checks_passed = all(e.passed for e in result.get_asset_check_evaluations())
            checks_ran = len(result.get_asset_check_evaluations())
        return {
            "archive_items": archive_items,
            "fill_seconds": round(fill_s, 1),
            "materialize_with_checks_s": round(materialize_s, 3),
            "checks_ran": checks_ran,
            "checks_passed": checks_passed and result.success,
            "per_run_checks_s": round(timed_checks(url, run_id), 4),
            "archive_checks_s": round(timed_checks(url, None), 4),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--large", type=int, default=1_000_000)
    parser.add_argument("--run-items", type=int, default=1_000)
    args = parser.parse_args()
    small, large = measure(args.small, args.run_items), measure(args.large, args.run_items)
    print(
        json.dumps(
            {
                "run_items": args.run_items,
                "small": small,
                "large": large,
                "per_run_checks_growth": round(large["per_run_checks_s"] / small["per_run_checks_s"], 2),
                "archive_checks_growth": round(large["archive_checks_s"] / small["archive_checks_s"], 2),
                "materialize_growth": round(large["materialize_with_checks_s"] / small["materialize_with_checks_s"], 2),
                "per_run_vs_archive_checks_at_large": round(large["per_run_checks_s"] / large["archive_checks_s"], 4),
                "target_per_run_growth": 1.5,
            }
        )
    )


if __name__ == "__main__":
    main()
