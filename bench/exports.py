"""Benchmark: content exports (CSV, XLSX, NDJSON, Parquet) against a floor and against pandas.

Generates N items (about 1 KB of text each), collects and ingests them through the real
pipeline into a scratch database on the configured (default: embedded) server, gives them
search terms as ``item_features`` would (one set-based UPDATE), then measures, each step in
a fresh process so its peak RSS is its own:

* ours   — ``export_content`` for one format into a local object store (streamed from
  Postgres, SHA-256, fsync, atomic rename, ``exports`` row);
* floor  — the same rows delivered the bare way into a file beside the store, fsynced as the
  store does (no checksum, no rename, no bookkeeping):
  CSV: ``COPY (the same rows) TO STDOUT WITH CSV`` written to the file as it arrives.
  Parquet: the rows fetched by the driver, an Arrow table built from them, written with
  ``pyarrow.parquet`` (zstd, as ours). Also timed inside it: ``arrow_write_s`` (only writing
  the Arrow table, already built: a bound no export from a database can reach) and
  ``in_memory_s`` (building and writing from the rows already fetched: the floor this bench
  used before 2026-12-01, which left out reading the database that ours includes). With CSV
  in the same run, ``ratio_to_copy_and_write`` divides by the CSV floor plus ``arrow_write_s``:
  the two steps a Parquet export cannot skip, done apart and at their bare speed.
  No floor for XLSX and NDJSON;
* pandas — what a user would write: ``pandas.read_sql`` + ``DataFrame.to_csv``,
  ``to_excel``, ``to_json(orient="records", lines=True)``, ``to_parquet``. ``to_excel``
  builds the whole workbook in memory and cannot pass 1,048,576 rows, and ``read_sql``
  holds every row in memory (about 14 GB at a million items for NDJSON), so pandas runs on
  the first ``--pandas-rows`` items (``--pandas-xlsx-rows`` for XLSX); rates are per row.

The load of a shared machine moves wall-clock times by 2× and more, so ours and the floor run
``--repeat`` times interleaved (the order alternating), and ``ratio_to_floor`` is the median of
the per-repetition ratios (our seconds / floor seconds; 1.0 = as fast as the floor); ``ratios``
lists them all, and ``ratio_of_best`` divides our fastest run by the floor's (the least
disturbed). ``seconds`` are medians; ``speedup_vs_pandas`` = our rows/s / pandas rows/s
(one pandas run); ``peak_rss_mb`` is the largest of our exporting processes' peak RSS, imports
included; ``load_average`` is the 1-minute load before and after. Prints one JSON object keyed
by format (and ``load_average``).
Usage: python bench/exports.py [--n 1000000] [--formats csv,parquet] [--repeat 5]
       [--pandas-rows 250000] [--pandas-xlsx-rows 100000]
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path
from statistics import median

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import payload_directory, peak_rss_mb, run_child, scratch_database  # noqa: E402
from sqlalchemy.dialects.postgresql.psycopg import dialect as psycopg_dialect  # noqa: E402

from observatory_assets.defs.exports.columns import COLUMNS, parquet_schema  # noqa: E402
from observatory_assets.defs.exports.delivery import CONTENT_FORMATS, export_content  # noqa: E402
from observatory_assets.defs.exports.filters import build_filters, selection  # noqa: E402
from observatory_assets.defs.ingestion.collect import SourceRequest, collect  # noqa: E402
from observatory_assets.defs.ingestion.demo_data import iter_items, write_jsonl  # noqa: E402
from observatory_assets.defs.ingestion.loading import ingest_collection_run  # noqa: E402
from resources.object_store import LocalObjectStore  # noqa: E402
from resources.postgres import engine_for  # noqa: E402

FILTERS = build_filters()  # the scratch database holds only the benchmark's items


def typed_rows_query(limit: int = 0) -> str:
    """The exported columns as Postgres types, in export order: what the floor and pandas read."""
    query = selection(FILTERS, *(f'{c.sql} AS "{c.name}"' for c in COLUMNS))
    query = query.limit(limit) if limit else query
    return str(query.compile(dialect=psycopg_dialect(), compile_kwargs={"literal_binds": True}))


def load(url: str, n: int, tmp: Path) -> int:
    """N generated items through collect + ingest, with search terms set as item_features would."""
    from sqlalchemy import text

    engine, store = engine_for(url), LocalObjectStore(tmp / "payloads")
    items = tmp / "items.jsonl"
    write_jsonl(items, iter_items(n, duplicate_rate=0.0, bad_rate=0.0))
    run_id = collect(engine, store, [SourceRequest("bench", "jsonl", path=str(items))])
    loaded = ingest_collection_run(engine, store, run_id).loaded
    items.unlink()
    with engine.begin() as conn:
        conn.execute(
            text(
                """
                UPDATE raw_items SET search_terms_matched =
                       CASE WHEN title ~* 'klima|climate' THEN ARRAY['klima'] ELSE '{}' END
                    || CASE WHEN title ~* 'rente|interest' THEN ARRAY['renter'] ELSE '{}' END
                    || CASE WHEN id % 4 = 0 THEN ARRAY['politik'] ELSE '{}' END
                """
            )
        )
        conn.exec_driver_sql("ANALYZE")
    return loaded


def child_export(url: str, out_dir: str, fmt: str) -> dict:
    result = export_content(engine_for(url), LocalObjectStore(Path(out_dir) / "objects"), FILTERS, [fmt])[0]
    return {"rows": result.record_count, "seconds": result.seconds, "bytes": result.size, "peak_rss_mb": peak_rss_mb()}


def _durable(target: Path, write) -> None:
    """Write ``target`` with ``write(handle)`` and fsync it, as the local object store does."""
    with open(target, "wb") as handle:
        write(handle)
        handle.flush()
        os.fsync(handle.fileno())


def child_floor_csv(url: str, out_dir: str) -> dict:
    import psycopg

    from resources.settings import as_libpq_dsn

    target = Path(out_dir) / "floor.csv"
    with psycopg.connect(as_libpq_dsn(url)) as conn, conn.cursor() as cursor:

        def copy_into(handle) -> None:
            with cursor.copy(f"COPY ({typed_rows_query()}) TO STDOUT WITH CSV HEADER") as copy:
                for chunk in copy:
                    handle.write(chunk)

        started = time.perf_counter()
        _durable(target, copy_into)
        seconds = time.perf_counter() - started
        rows = cursor.rowcount
    size = target.stat().st_size
    target.unlink()
    return {"rows": rows, "seconds": seconds, "bytes": size, "peak_rss_mb": peak_rss_mb()}


def child_floor_parquet(url: str, out_dir: str) -> dict:
    import psycopg
    import pyarrow as pa
    import pyarrow.parquet as pq

    from resources.settings import as_libpq_dsn

    schema = parquet_schema(include_metadata=False)
    target = Path(out_dir) / "floor.parquet"
    with psycopg.connect(as_libpq_dsn(url)) as conn:
        started = time.perf_counter()
        rows = conn.execute(typed_rows_query()).fetchall()
    fetched = time.perf_counter()
    columns = list(zip(*rows)) if rows else [[] for _ in schema]
    table = pa.Table.from_arrays([pa.array(col, type=f.type) for col, f in zip(columns, schema)], schema=schema)
    built = time.perf_counter()
    _durable(target, lambda handle: pq.write_table(table, handle, compression="zstd"))
    done = time.perf_counter()
    target.unlink()
    return {"rows": len(rows), "seconds": done - started, "in_memory_s": done - fetched,
            "arrow_write_s": done - built, "peak_rss_mb": peak_rss_mb()}  # fmt: skip


def child_pandas(url: str, out_dir: str, fmt: str, limit: str) -> dict:
    import pandas as pd
    from sqlalchemy import text

    target = Path(out_dir) / f"pandas.{fmt}"
    engine = engine_for(url)
    started = time.perf_counter()
    frame = pd.read_sql(text(typed_rows_query(int(limit))), engine)
    if fmt == "csv":
        frame.to_csv(target, index=False, encoding="utf-8-sig")
    elif fmt == "xlsx":
        frame["published_at"] = frame["published_at"].dt.tz_localize(None)
        frame.to_excel(target, index=False)
    elif fmt == "ndjson":
        frame.to_json(target, orient="records", lines=True, date_format="iso", force_ascii=False)
    else:
        frame.to_parquet(target, index=False)
    seconds = time.perf_counter() - started
    target.unlink()
    return {"rows": len(frame), "seconds": seconds, "peak_rss_mb": peak_rss_mb()}


CHILDREN = {"export": child_export, "floor_csv": child_floor_csv, "floor_parquet": child_floor_parquet,
            "pandas": child_pandas}  # fmt: skip


FLOORS = {"csv": "floor_csv", "parquet": "floor_parquet"}


def measure(me: Path, url: str, tmp: str, fmt: str, repeat: int) -> tuple[list[dict], list[dict]]:
    """``repeat`` runs of ours and of the format's floor, interleaved, the order alternating."""
    ours, floors = [], []
    for rep in range(repeat):
        steps = [("ours", ("export", url, tmp, fmt))]
        if fmt in FLOORS:
            steps.append(("floor", (FLOORS[fmt], url, tmp)))
        for name, args in steps if rep % 2 == 0 else steps[::-1]:
            (ours if name == "ours" else floors).append(run_child(me, "--child", *args))
    return ours, floors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="generated items")
    parser.add_argument("--formats", default=",".join(CONTENT_FORMATS))
    parser.add_argument("--repeat", type=int, default=5, help="interleaved runs of ours and of the floor")
    parser.add_argument("--pandas-rows", type=int, default=250_000, help="cap for the pandas baseline")
    parser.add_argument("--pandas-xlsx-rows", type=int, default=100_000, help="cap for pandas.to_excel")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        step, *rest = args.child
        print(json.dumps(CHILDREN[step](*rest)))
        return

    me = Path(__file__)
    report = {}
    with scratch_database() as url, payload_directory("bench-exports-") as tmp:
        started = time.perf_counter()
        loaded = load(url, args.n, Path(tmp))
        print(f"loaded {loaded} items in {time.perf_counter() - started:.0f} s", file=sys.stderr)
        load_before = round(os.getloadavg()[0], 1)
        for fmt in args.formats.split(","):
            ours, floors = measure(me, url, tmp, fmt, args.repeat)
            limit = args.pandas_xlsx_rows if fmt == "xlsx" else args.pandas_rows
            pandas = run_child(me, "--child", "pandas", url, tmp, fmt, str(limit))
            seconds = median(o["seconds"] for o in ours)
            rate, pandas_rate = ours[0]["rows"] / seconds, pandas["rows"] / pandas["seconds"]
            entry = {
                "rows": ours[0]["rows"],
                "seconds": round(seconds, 2),
                "rows_per_s": round(rate),
                "mb": round(ours[0]["bytes"] / 1e6, 1),
                "peak_rss_mb": max(o["peak_rss_mb"] for o in ours),
                "pandas_rows": pandas["rows"],
                "pandas_seconds": round(pandas["seconds"], 2),
                "pandas_rows_per_s": round(pandas_rate),
                "pandas_peak_rss_mb": pandas["peak_rss_mb"],
                "speedup_vs_pandas": round(rate / pandas_rate, 2),
            }
            if floors:
                ratios = [o["seconds"] / f["seconds"] for o, f in zip(ours, floors)]
                floor_seconds = median(f["seconds"] for f in floors)
                best = min(o["seconds"] for o in ours) / min(f["seconds"] for f in floors)
                entry.update(floor_seconds=round(floor_seconds, 2), floor_rows_per_s=round(floors[0]["rows"] / floor_seconds),
                             ratio_to_floor=round(median(ratios), 2), ratios=[round(r, 2) for r in ratios],
                             ratio_of_best=round(best, 2))  # fmt: skip
            if fmt == "parquet":
                for part in ("in_memory_s", "arrow_write_s"):
                    entry[part] = round(median(f[part] for f in floors), 2)
                    ratio = median(o["seconds"] / f[part] for o, f in zip(ours, floors))
                    entry[f"ratio_to_{part.removesuffix('_s')}"] = round(ratio, 2)
            report[fmt] = entry
            print(f"{fmt}: {json.dumps(entry)}", file=sys.stderr)
        if "csv" in report and "parquet" in report:
            # the two steps a Parquet export cannot skip, measured apart: the rows out of Postgres
            # at bare-COPY speed, and pyarrow writing them once they are an Arrow table
            bound = report["csv"]["floor_seconds"] + report["parquet"]["arrow_write_s"]
            report["parquet"]["ratio_to_copy_and_write"] = round(report["parquet"]["seconds"] / bound, 2)
        report["load_average"] = [load_before, round(os.getloadavg()[0], 1)]
    print(json.dumps(report))


if __name__ == "__main__":
    main()
