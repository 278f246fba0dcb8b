"""Throughput of item_features, item_embeddings and events, and how clustering scales with size.

On a fresh scratch database (bench/common.py): ``--n`` generated demo items (mixed Danish and
English, ~1000-character texts, stories retold many times) are collected and
ingested, then featurized, embedded with the default (hashing) backend and
clustered, each step timed. Against floors and baselines measured in the same
run:

* embedding write floors — bare binary COPY of vectors into an unindexed
  table; the same COPY followed by building the HNSW index; COPY into a table
  that keeps the HNSW index (on a smaller sample);
* full-text vector floor — computing the run's ``tsvector`` alone, in one SELECT;
* naive clustering — what one would otherwise write: per item, a pgvector
  nearest-centroid query (HNSW) over the window and an INSERT/UPDATE round trip;

``--scaling`` repeats ingest + embed + cluster at other sizes and reports the
clustering time per item (flat = linear). Prints one JSON object.

    python bench/events.py --n 100000 --scaling 10000,100000
"""

import argparse
import json
import sys
import time
from pathlib import Path

from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cluster_quality import fresh_database  # noqa: E402

from observatory_assets.defs.enrichment.embeddings import embed_run  # noqa: E402
from observatory_assets.defs.enrichment.features import (
    FULLTEXT_VECTOR,  # noqa: E402
    featurize_run,  # noqa: E402
)
from observatory_assets.defs.enrichment.lexical import LexicalEmbedder  # noqa: E402
from observatory_assets.defs.enrichment.spaces import current_space  # noqa: E402
from observatory_assets.defs.enrichment.vectors import LEAD_CHARS  # noqa: E402
from observatory_assets.defs.events.clustering import ClusteringParams, cluster_events  # noqa: E402
from observatory_assets.defs.ingestion.collect import SourceRequest, collect  # noqa: E402
from observatory_assets.defs.ingestion.demo_data import iter_items, write_jsonl  # noqa: E402
from observatory_assets.defs.ingestion.loading import ingest_collection_run  # noqa: E402
from resources.postgres import register_vector_type  # noqa: E402

NAIVE_SAMPLE = 2000
#: Vectors for the write floor into a maintained HNSW index (each one inserted into the graph).
INCREMENTAL_SAMPLE = 5000


def _load(engine, store, workdir: Path, n: int, seed: int) -> tuple[int, float]:
    payload = workdir / f"items-{n}.jsonl"
    write_jsonl(payload, iter_items(n, seed=seed))
    run_id = collect(engine, store, [SourceRequest("bench", "jsonl", path=str(payload))])
    started = time.perf_counter()
    ingest_collection_run(engine, store, run_id)
    return run_id, time.perf_counter() - started


def _rate(items: int, seconds: float) -> float:
    return round(items / seconds, 1) if seconds > 0 else 0.0


def embedding_write_floors(engine, embedder: LexicalEmbedder, sample: int, incremental_sample: int) -> dict:
    """Items/s of writing the embedded vectors again with nothing else to do, into temporary tables.

    * ``unindexed``: bare binary COPY into a table without index;
    * ``copy_then_build``: the same COPY, then building the schema's HNSW index over the table
      (the cheapest way to end up with indexed vectors);
    * ``incremental_index``: binary COPY into a table that already has the HNSW index (every row
      inserted into the graph), on a smaller sample: it is two orders of magnitude slower.
    """
    with engine.connect() as sa_conn:
        conn = sa_conn.connection.driver_connection
        register_vector_type(conn)
        stored = "SELECT embedding FROM item_embeddings WHERE embedder = %s ORDER BY item_id LIMIT %s"
        with conn.transaction():
            vectors = [v for (v,) in conn.execute(stored, (embedder.name, sample), binary=True)]
            schema_index = conn.execute("SELECT pg_get_indexdef('item_embeddings_hnsw'::regclass)").fetchone()[0]
        index = schema_index.replace("item_embeddings_hnsw ON public.item_embeddings", "ON floor_vectors")
        assert index != schema_index, schema_index
        rates = {}
        for name, rows, before, after in (
            ("unindexed", sample, None, None),
            ("copy_then_build", sample, None, index),
            ("incremental_index", min(sample, incremental_sample), index, None),
        ):
            with conn.transaction():
                conn.execute(
                    f"CREATE TEMP TABLE floor_vectors (item_id bigint, embedding vector({embedder.dimensions})) "
                    "ON COMMIT DROP"
                )
                if before:
                    conn.execute(before)
                started = time.perf_counter()
                with conn.cursor() as cursor, cursor.copy("COPY floor_vectors FROM STDIN WITH (FORMAT BINARY)") as copy:
                    copy.set_types(["int8", "vector"])
                    for i, vector in enumerate(vectors[:rows]):
                        copy.write_row((i, vector))
                if after:
                    conn.execute(after)
                rates[name] = _rate(rows, time.perf_counter() - started)
    return rates


def fulltext_vector_floor(engine, run_id: int) -> float:
    """Items/s of computing the run's full-text vectors alone (one SELECT, one server core): what
    item_features cannot go below without storing less."""
    started = time.perf_counter()
    with engine.connect() as conn:
        items = conn.execute(
            text(
                f"SELECT count(*), sum(length({FULLTEXT_VECTOR.format(config='r.text_search_config')})) "
                "FROM raw_items r WHERE r.collection_run_id = :run_id"
            ),
            {"run_id": run_id},
        ).one()[0]
    return _rate(items, time.perf_counter() - started)


def naive_clustering(engine, embedder_name: str, params: ClusteringParams, sample: int) -> float:
    """Items/s of per-item pgvector round trips: nearest open centroid (HNSW), then UPDATE or INSERT."""
    with engine.connect() as sa_conn:
        conn = sa_conn.connection.driver_connection
        register_vector_type(conn)
        with conn.transaction():
            conn.execute(
                "CREATE TEMP TABLE naive_events (id serial PRIMARY KEY, centroid vector(384), total vector(384), "
                "last_seen timestamptz, n integer) ON COMMIT DROP; "
                "CREATE INDEX ON naive_events USING hnsw (centroid vector_cosine_ops)"
            )
            items = conn.execute(
                "SELECT coalesce(r.published_at, r.fetched_at), e.embedding FROM item_embeddings e "
                "JOIN raw_items r ON r.id = e.item_id WHERE e.embedder = %s ORDER BY 1 LIMIT %s",
                (embedder_name, sample),
                binary=True,
            ).fetchall()
            started = time.perf_counter()
            for at, embedding in items:
                vector = embedding.to_numpy()
                best = conn.execute(
                    "SELECT id, 1 - (centroid <=> %s) FROM naive_events "
                    "WHERE last_seen >= %s - make_interval(hours => %s) ORDER BY centroid <=> %s LIMIT 1",
                    (vector, at, int(params.window_hours), vector),
                ).fetchone()
                if best and best[1] >= params.threshold:
                    conn.execute(
                        "UPDATE naive_events SET total = total + %s, n = n + 1, last_seen = %s, "
                        "centroid = l2_normalize(total + %s) WHERE id = %s",
                        (vector, at, vector, best[0]),
                    )
                else:
                    conn.execute(
                        "INSERT INTO naive_events (centroid, total, last_seen, n) VALUES (%s, %s, %s, 1)",
                        (vector, vector, at),
                    )
            seconds = time.perf_counter() - started
    return _rate(len(items), seconds)


def run(n: int, scaling: list[int], seed: int) -> dict:
    report: dict = {"n": n}
    with fresh_database() as (engine, store, workdir):
        run_id, ingest_seconds = _load(engine, store, workdir, n, seed)
        started = time.perf_counter()
        embedder = LexicalEmbedder(current_space(engine))
        space_seconds = time.perf_counter() - started
        params = ClusteringParams(threshold=embedder.join_threshold)
        report.update(embedder=embedder.name, params=params.__dict__)
        features = featurize_run(engine, run_id)
        embeddings = embed_run(engine, embedder, run_id, force=True)  # embeds and counts, as a new run does
        clustering = cluster_events(engine, embedder.name, embedder.dimensions, params)
        items = features.items
        with engine.connect() as conn:
            events = conn.exec_driver_sql("SELECT count(*) FROM events").scalar_one()
            documents = conn.exec_driver_sql(
                f"SELECT title, left(text, {2 * LEAD_CHARS}) FROM raw_items ORDER BY id"
            ).all()
        enrichment_seconds = features.seconds + embeddings.seconds + clustering.seconds
        compute = _compute_rate(embedder, [tuple(d) for d in documents])
        floors = embedding_write_floors(engine, embedder, min(items, 20_000), INCREMENTAL_SAMPLE)
        floor, indexed_floor = floors["unindexed"], floors["copy_then_build"]
        features_seconds = features.seconds + embeddings.seconds
        report.update(
            items=items,
            events=events,
            join_threshold=embedder.join_threshold,
            ingest_items_per_s=_rate(items, ingest_seconds),
            space_snapshot_seconds=round(space_seconds, 3),
            features_items_per_s=_rate(items, features.seconds),
            embeddings_items_per_s=_rate(embeddings.embedded, embeddings.seconds),
            clustering_items_per_s=_rate(clustering.items_assigned, clustering.seconds),
            features_embeddings_clustering_items_per_s=_rate(items, enrichment_seconds),
            target_items_per_s=2000,
            embed_compute_items_per_s=compute,
            fulltext_vector_floor_items_per_s=fulltext_vector_floor(engine, run_id),
            embedding_write_floor_unindexed_items_per_s=floor,
            embedding_write_floor_copy_then_build_index_items_per_s=indexed_floor,
            embedding_write_floor_incremental_index_items_per_s=floors["incremental_index"],
            embeddings_vs_write_floor=round(_rate(embeddings.embedded, embeddings.seconds) / floor, 3)
            if floor
            else None,
            features_embeddings_vs_compute_plus_write_floor=round(
                features_seconds / (items / compute + items / floor), 2
            ),
            features_embeddings_vs_compute_plus_indexed_write_floor=round(
                features_seconds / (items / compute + items / indexed_floor), 2
            ),
        )
        naive = naive_clustering(engine, embedder.name, params, min(items, NAIVE_SAMPLE))
        report.update(
            naive_clustering_items_per_s=naive,
            clustering_speedup_vs_naive=round(report["clustering_items_per_s"] / naive, 2) if naive else None,
        )
        scaling_rows = [{"n": n, "items": clustering.items_assigned, "seconds": round(clustering.seconds, 3)}]
    for size in scaling:
        if size == n:
            continue
        with fresh_database() as (engine, store, workdir):
            run_id, _ = _load(engine, store, workdir, size, seed)
            sized = LexicalEmbedder(current_space(engine))
            embed_run(engine, sized, run_id)
            result = cluster_events(engine, sized.name, sized.dimensions, ClusteringParams(sized.join_threshold))
            scaling_rows.append({"n": size, "items": result.items_assigned, "seconds": round(result.seconds, 3)})
    scaling_rows.sort(key=lambda r: r["n"])
    for row in scaling_rows:
        row["us_per_item"] = round(row["seconds"] / max(row["items"], 1) * 1e6, 1)
    report["clustering_scaling"] = scaling_rows
    report["clustering_cost_per_item_largest_vs_smallest"] = round(
        scaling_rows[-1]["us_per_item"] / scaling_rows[0]["us_per_item"], 2
    )
    return report


def _compute_rate(embedder: LexicalEmbedder, documents: list, chunk: int = 2000) -> float:
    """Items/s of a fresh (cold-cache) embedder in one thread, in the embedding step's chunks."""
    fresh = LexicalEmbedder(embedder.space)
    started = time.perf_counter()
    for start in range(0, len(documents), chunk):
        fresh.embed_and_count(documents[start : start + chunk])
    return _rate(len(documents), time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="items for the throughput run")
    parser.add_argument("--scaling", default="10000", help="comma-separated extra sizes for clustering growth")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    scaling = [int(s) for s in args.scaling.split(",") if s.strip()]
    print(json.dumps(run(args.n, scaling, args.seed)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
