"""Benchmark: backup and restore verification against a bare ``pg_dump -Fc`` to a local file.

Generates N items (about 1 KB of text each), collects and ingests them into a scratch
database on the configured (default: embedded) server, then, each in a fresh process:

* floor  — ``pg_dump -Fc -f file`` with the same pg_dump: what the disk and pg_dump allow;
* ours   — ``take_backup`` (pg_dump streamed into the object store with SHA-256, row counts and
  key-table fingerprints in the dump's snapshot) followed by ``verify_backup`` (download,
  check, ``pg_restore`` into a scratch database, compare, drop).

``ratio_to_floor`` is the floor's MB/s over ours (1.0 = as fast as a bare dump; target ≤ 1.25).
``peak_rss_mb`` is the peak RSS of the Python process doing backup + verification (pg_dump and
pg_restore run in their own processes); streaming keeps it flat in the database size.
Prints one JSON object. Usage: python bench/backup.py [--n 1000000]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import payload_directory, peak_rss_mb, run_child, scratch_database  # noqa: E402

from observatory_assets.defs.ingestion.collect import SourceRequest, collect  # noqa: E402
from observatory_assets.defs.ingestion.demo_data import iter_items, write_jsonl  # noqa: E402
from observatory_assets.defs.ingestion.loading import ingest_collection_run  # noqa: E402
from observatory_assets.defs.operations.backups import libpq_args, pg_tool, take_backup  # noqa: E402
from observatory_assets.defs.operations.restore import verify_backup  # noqa: E402
from resources.object_store import LocalObjectStore  # noqa: E402
from resources.postgres import engine_for  # noqa: E402


def child_floor(url: str, out_dir: str) -> dict:
    import subprocess

    from sqlalchemy import text

    with engine_for(url).connect() as conn:
        major = int(conn.execute(text("SHOW server_version_num")).scalar_one()) // 10000
    dsn, env = libpq_args(url)
    target = Path(out_dir) / "floor.dump"
    started = time.perf_counter()
    subprocess.run([pg_tool("pg_dump", major), "--format=custom", f"--file={target}", f"--dbname={dsn}"],
                   env=env, check=True)  # fmt: skip
    seconds = time.perf_counter() - started
    size = target.stat().st_size
    target.unlink()
    return {"seconds": seconds, "bytes": size}


def child_backup(url: str, out_dir: str) -> dict:
    engine, store = engine_for(url), LocalObjectStore(Path(out_dir) / "objects")
    backup = take_backup(engine, store, url)
    verification = verify_backup(engine, store, url, backup.key)
    return {
        "seconds": backup.seconds, "bytes": backup.size, "verify_s": verification.seconds,
        "verify_download_s": verification.download_s, "verify_restore_s": verification.restore_s,
        "verify_compare_s": verification.compare_s, "rows": verification.rows, "peak_rss_mb": peak_rss_mb(),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="generated items")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        step, *rest = args.child
        print(json.dumps({"floor": child_floor, "backup": child_backup}[step](*rest)))
        return

    with scratch_database() as url, payload_directory("bench-backup-") as tmp:
        engine, store = engine_for(url), LocalObjectStore(Path(tmp) / "payloads")
        started = time.perf_counter()
        items = Path(tmp) / "items.jsonl"
        write_jsonl(items, iter_items(args.n))
        run_id = collect(engine, store, [SourceRequest("bench", "jsonl", path=str(items))])
        loaded = ingest_collection_run(engine, store, run_id).loaded
        items.unlink()
        prepare_s = time.perf_counter() - started
        floor = run_child(Path(__file__), "--child", "floor", url, tmp)
        ours = run_child(Path(__file__), "--child", "backup", url, tmp)

    floor_mb_per_s = floor["bytes"] / 1e6 / floor["seconds"]
    backup_mb_per_s = ours["bytes"] / 1e6 / ours["seconds"]
    print(json.dumps({
        "n": args.n,
        "items_loaded": loaded,
        "rows_in_database": ours["rows"],
        "backup_mb": round(ours["bytes"] / 1e6, 2),
        "backup_s": round(ours["seconds"], 2),
        "backup_mb_per_s": round(backup_mb_per_s, 2),
        "floor_mb": round(floor["bytes"] / 1e6, 2),
        "floor_s": round(floor["seconds"], 2),
        "floor_mb_per_s": round(floor_mb_per_s, 2),
        "ratio_to_floor": round(floor_mb_per_s / backup_mb_per_s, 3),
        "verify_s": round(ours["verify_s"], 2),
        "verify_download_s": round(ours["verify_download_s"], 2),
        "verify_restore_s": round(ours["verify_restore_s"], 2),
        "verify_compare_s": round(ours["verify_compare_s"], 2),
        "peak_rss_mb": ours["peak_rss_mb"],
        "prepare_s": round(prepare_s, 1),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
