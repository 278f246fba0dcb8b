"""Benchmark: the raw_items ingest path against a bare COPY floor and pandas.to_sql.

Generates N items (about 1 KB of text each, 5% duplicates, 1% bad rows), collects
them as one collection run and, each in a fresh process on a fresh copy of the database:

* ours   — ``ingest_collection_run`` (parse, normalize, COPY to staging, set-based dedup);
* reingest / forced_reingest — the same run again (verified skip; full re-parse with ``force``);
* floor  — bare ``COPY`` of the same clean rows (every column ours wrote, platform and pseudonym
  included) into the same partitioned, indexed table;
* pandas — ``DataFrame.to_sql(method="multi")`` of the same clean rows (what a user would write).

Ours and the floor alternate ``--reps`` times, so that load from other work hits both alike;
the ratio reported is the median of the per-repetition ratios. Besides wall time, each side's
CPU seconds (client process and server backends; the server is local) are reported, which the
load does not inflate.

Prints one JSON object. Usage: python bench/ingest.py [--n 100000] [--reps 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import payload_directory, peak_rss_mb, run_child, scratch_database, timed  # noqa: E402

from observatory_assets.defs.ingestion.collect import SourceRequest, collect  # noqa: E402
from observatory_assets.defs.ingestion.demo_data import iter_items, write_jsonl  # noqa: E402
from observatory_assets.defs.ingestion.payload_reader import RAW_ITEM_COLUMNS  # noqa: E402
from resources.object_store import LocalObjectStore  # noqa: E402
from resources.postgres import engine_for  # noqa: E402
from resources.settings import as_libpq_dsn  # noqa: E402

#: The columns ingestion writes: the floor loads the very rows ours loaded, with the same index work.
CLEAN_COLUMNS = ", ".join(RAW_ITEM_COLUMNS)
COUNT_COLUMNS = ("views", "likes", "shares", "comments")


def child_ingest(url: str, objects: str, run_id: str, force: str) -> dict:
    from observatory_assets.defs.ingestion.loading import ingest_collection_run

    started = time.process_time()
    result = ingest_collection_run(engine_for(url), LocalObjectStore(Path(objects)), int(run_id), force=force == "1")
    client_cpu = time.process_time() - started
    return {
        "seconds": result.seconds,
        "client_cpu_seconds": client_cpu,
        "server_cpu_seconds": _backends_cpu_seconds(url),
        "delivered": result.delivered,
        "loaded": result.loaded,
        "duplicates": result.duplicates,
        "rejected": result.rejected,
        "skipped": result.skipped,
        "peak_rss_mb": peak_rss_mb(),
    }


def child_floor(url: str, clean_file: str) -> dict:
    import psycopg

    times: dict = {}
    with psycopg.connect(as_libpq_dsn(url)) as conn, open(clean_file, "rb") as data:
        _prepare_target(conn)
        started = time.process_time()
        with timed(times, "seconds"), conn.cursor().copy(f"COPY raw_items ({CLEAN_COLUMNS}) FROM STDIN") as copy:
            while chunk := data.read(1 << 20):
                copy.write(chunk)
        conn.commit()
        client_cpu = time.process_time() - started
        server_cpu = _backends_cpu_seconds(url)
    return {**times, "client_cpu_seconds": client_cpu, "server_cpu_seconds": server_cpu, "peak_rss_mb": peak_rss_mb()}


def _backends_cpu_seconds(url: str) -> float:
    """CPU seconds used so far by every server backend connected to the database of ``url`` (a fresh
    database per step, so these are the step's own; the server runs on this machine)."""
    import psycopg

    with psycopg.connect(as_libpq_dsn(url)) as conn:
        pids = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND backend_type = 'client backend'"
        ).fetchall()
    ticks = 0
    for (pid,) in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:  # a pooled connection closed since the query: its backend is gone
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def child_pandas(url: str, clean_file: str) -> dict:
    import pandas as pd

    columns = [c.strip() for c in CLEAN_COLUMNS.split(",")]
    frame = pd.read_csv(
        clean_file, sep="\t", names=columns, header=None, na_values=["\\N"], keep_default_na=False, quoting=3, dtype=str
    )
    frame["content_hash"] = frame["content_hash"].map(lambda h: bytes.fromhex(h[3:]))
    for column in ("id", "source_id", "collection_run_id", "record_no"):
        frame[column] = frame[column].astype("int64")
    for column in COUNT_COLUMNS:
        frame[column] = pd.to_numeric(frame[column]).astype("Int64")
    for column in ("published_at", "fetched_at"):
        frame[column] = pd.to_datetime(frame[column], utc=True, format="ISO8601")
    frame["raw_metadata"] = frame["raw_metadata"].map(json.loads)
    import psycopg
    from sqlalchemy import LargeBinary
    from sqlalchemy.dialects.postgresql import JSONB

    with psycopg.connect(as_libpq_dsn(url)) as conn:
        _prepare_target(conn)
        conn.commit()
    engine = engine_for(url)
    times: dict = {}
    with timed(times, "seconds"):
        frame.to_sql(
            "raw_items",
            engine,
            if_exists="append",
            index=False,
            method="multi",
            chunksize=1000,
            dtype={"raw_metadata": JSONB, "content_hash": LargeBinary},
        )
    return {**times, "peak_rss_mb": peak_rss_mb()}


def _prepare_target(conn) -> None:
    """The floor and pandas load the same rows: give them the same sources, run and partitions."""
    conn.execute("INSERT INTO sources (name, type) VALUES ('bench', 'jsonl')")
    conn.execute("INSERT INTO collection_runs (status) VALUES ('completed')")
    conn.execute(
        "SELECT ensure_month_partition('raw_items', m::date) FROM generate_series("
        "DATE '2026-09-01', DATE '2026-12-01', interval '1 month') m"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--reps", type=int, default=3, help="alternating repetitions of ours and the floor")
    args = parser.parse_args()
    script = Path(__file__).resolve()
    with (
        payload_directory("bench-ingest-") as tmp,
        scratch_database() as collected_url,
        scratch_database() as empty_url,
    ):
        payload = Path(tmp) / "items.jsonl"
        write_jsonl(payload, iter_items(args.n, seed=11, text_chars=1000))
        objects = Path(tmp) / "objects"
        run_id = collect(
            engine_for(collected_url), LocalObjectStore(objects), [SourceRequest("bench", "jsonl", path=str(payload))]
        )
        clean = Path(tmp) / "clean.tsv"
        ours, floors = [], []
        for rep in range(args.reps):
            with scratch_database(template=collected_url) as ours_url:
                ours.append(run_child(script, "ingest", ours_url, str(objects), str(run_id), "0"))
                if rep == 0:
                    again = run_child(script, "ingest", ours_url, str(objects), str(run_id), "0")
                    forced = run_child(script, "ingest", ours_url, str(objects), str(run_id), "1")
                    _dump_clean_rows(ours_url, clean)
            with scratch_database(template=empty_url) as floor_url:
                floors.append(run_child(script, "floor", floor_url, str(clean)))
        with scratch_database(template=empty_url) as pandas_url:
            pandas = run_child(script, "pandas", pandas_url, str(clean))

    first = ours[0]
    seconds = statistics.median(run["seconds"] for run in ours)
    floor_seconds = statistics.median(run["seconds"] for run in floors)
    ours_cpu = [run["client_cpu_seconds"] + run["server_cpu_seconds"] for run in ours]
    floor_cpu = [run["client_cpu_seconds"] + run["server_cpu_seconds"] for run in floors]
    print(
        json.dumps(
            {
                "n": args.n,
                "reps": args.reps,
                "delivered": first["delivered"],
                "loaded": first["loaded"],
                "duplicates": first["duplicates"],
                "rejected": first["rejected"],
                "seconds": round(seconds, 3),
                "items_per_s": round(args.n / seconds),
                "floor_seconds": round(floor_seconds, 3),
                "floor_rows_per_s": round(first["loaded"] / floor_seconds),
                "ratio_to_floor": round(
                    statistics.median(o["seconds"] / f["seconds"] for o, f in zip(ours, floors)), 3
                ),
                "ratios_to_floor": [round(o["seconds"] / f["seconds"], 3) for o, f in zip(ours, floors)],
                "client_cpu_seconds": round(statistics.median(run["client_cpu_seconds"] for run in ours), 2),
                "server_cpu_seconds": round(statistics.median(run["server_cpu_seconds"] for run in ours), 2),
                "floor_cpu_seconds": round(statistics.median(floor_cpu), 2),
                "cpu_ratio_to_floor": round(statistics.median(o / f for o, f in zip(ours_cpu, floor_cpu)), 3),
                "pandas_seconds": round(pandas["seconds"], 3),
                "speedup_vs_pandas": round(pandas["seconds"] / seconds, 2),
                "reingest_ratio": round(again["seconds"] / first["seconds"], 4),
                "reingest_skipped": again["skipped"],
                "forced_reingest_ratio": round(forced["seconds"] / first["seconds"], 3),
                "peak_rss_mb": max(run["peak_rss_mb"] for run in ours),
                "pandas_peak_rss_mb": pandas["peak_rss_mb"],
                "load_average": [round(load, 2) for load in os.getloadavg()],
            }
        )
    )


def _dump_clean_rows(url: str, clean: Path) -> None:
    """The rows ours loaded, as COPY text: what the floor and pandas load."""
    import psycopg

    with psycopg.connect(as_libpq_dsn(url)) as conn, open(clean, "wb") as out:
        with conn.cursor().copy(f"COPY (SELECT {CLEAN_COLUMNS} FROM raw_items) TO STDOUT") as copy:
            for chunk in copy:
                out.write(chunk)


if __name__ == "__main__":
    steps = {"ingest": child_ingest, "floor": child_floor, "pandas": child_pandas}
    if len(sys.argv) > 1 and sys.argv[1] in steps:
        print(json.dumps(steps[sys.argv[1]](*sys.argv[2:])))
    else:
        main()
