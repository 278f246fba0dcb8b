"""Benchmark: the analysis assets (``volume_stats``, ``actor_network``) at archive scale.

On a scratch database (bench/common.py), ``--items`` items over ``--days`` days are generated in
Postgres with set-based SQL (the archive's shape, not its text: platforms, arenas, sources, languages,
sentiment labels, 0–2 matched terms, one of ``--authors`` pseudonymous authors, a tenth of the items in
events, 5 % linked to one of ``--actors`` actors as author and 5 % mentioning one). Then:

* ours    — :func:`compute_volume_stats` over every day in one statement (a backfill of the daily
  partitions runs as one run), written to ``volume_stats``; ``one_day_s`` is one daily partition;
  and the actor network built, measured (degree, weighted degree, sampled betweenness, Louvain) and
  stored;
* floor   — the same counts as one ``GROUP BY GROUPING SETS`` statement over the whole range
  (with the term and actor counts beside it), read back and not written: what Postgres itself
  needs for the aggregate;
* pandas  — what a user would write: ``pandas.read_sql`` of the columns, then one ``groupby`` per
  dimension (terms exploded, actors joined).

Prints one JSON object: seconds of each, ``ratio_to_floor`` (the median of ours / floor over ``--repeat`` interleaved runs; target ≤ 1.5),
``speedup_vs_pandas``, the network's size and time, and the 1-minute load before and after.

    python bench/analysis.py --items 1000000 --authors 10000
"""

import argparse
import json
import os
import statistics
import sys
import time
from datetime import date, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import scratch_database  # noqa: E402

GENERATE = """
INSERT INTO query_designs (name, title) VALUES ('bench', 'bench');
INSERT INTO sources (name, type) SELECT 'source-' || g, 'jsonl' FROM generate_series(1, 20) g;
INSERT INTO collection_runs (query_design_id, status)
SELECT (SELECT id FROM query_designs WHERE name = 'bench'), 'completed' FROM generate_series(1, 10);
INSERT INTO item_keys (source_id, external_id, content_hash, published_at, collection_run_id, record_no)
SELECT (SELECT min(id) FROM sources) + g % 20, 'x' || g, sha256(int8send(g)),
       timestamptz '2026-11-01' + (g % :days) * interval '1 day' + (g % 86400) * interval '1 second',
       (SELECT min(id) FROM collection_runs) + g % 10, g
  FROM generate_series(1, :items) g;
INSERT INTO raw_items (id, source_id, collection_run_id, record_no, external_id, published_at, fetched_at,
                       content_hash, language, sentiment_label, search_terms_matched, platform, arena,
                       author_pseudonym)
SELECT k.item_id, k.source_id, k.collection_run_id, k.record_no, k.external_id, k.published_at, k.published_at,
       k.content_hash, (ARRAY['da', 'en', 'de'])[1 + k.record_no % 3],
       (ARRAY['negative', 'neutral', 'positive'])[1 + k.record_no % 3],
       CASE k.record_no % 3 WHEN 0 THEN '{}'::text[] WHEN 1 THEN ARRAY['term-' || k.record_no % 20]
            ELSE ARRAY['term-' || k.record_no % 20, 'term-' || (k.record_no + 7) % 20] END,
       (ARRAY['rss', 'reddit', 'bluesky', 'telegram', 'youtube'])[1 + k.record_no % 5],
       (ARRAY['news', 'social'])[1 + k.record_no % 2],
       'author-' || (CAST(k.record_no AS bigint) * 7919) % :authors
  FROM item_keys k;
INSERT INTO actors (name, kind, fingerprint) SELECT 'actor-' || g, 'person', '' FROM generate_series(1, :actors) g;
INSERT INTO item_actors (item_id, actor_id, role, method, matched)
SELECT k.item_id, (SELECT min(id) FROM actors) + k.record_no % :actors, 'author', 'presence', ''
  FROM item_keys k WHERE k.record_no % 20 = 0;
INSERT INTO item_actors (item_id, actor_id, role, method, matched)
SELECT k.item_id, (SELECT min(id) FROM actors) + (k.record_no / 7) % :actors, 'mention', 'name', ''
  FROM item_keys k WHERE k.record_no % 20 = 3;
INSERT INTO events (embedder, centroid, first_seen_at, last_seen_at)
SELECT 'bench', array_fill(0.1, ARRAY[{dimensions}])::vector, now(), now() FROM generate_series(1, :events);
INSERT INTO event_items (item_id, event_id, similarity, item_time, item_hash, source_id)
SELECT k.item_id, (SELECT min(id) FROM events) + k.record_no % :events, 1, k.published_at, k.content_hash, k.source_id
  FROM item_keys k WHERE k.record_no % 10 = 0;
ANALYZE;
"""

FLOOR = """
WITH items AS (
    SELECT r.id, CAST(r.published_at AT TIME ZONE 'UTC' AS date) AS day, cr.query_design_id AS design,
           coalesce(r.platform, 'unknown') AS platform, coalesce(r.arena, 'unknown') AS arena, s.name AS source,
           coalesce(r.language, 'unknown') AS language, coalesce(r.sentiment_label, 'unscored') AS sentiment,
           r.search_terms_matched AS terms
      FROM raw_items r JOIN collection_runs cr ON cr.id = r.collection_run_id JOIN sources s ON s.id = r.source_id
     WHERE r.published_at >= :since AND r.published_at < :until
)
SELECT day, design, platform, arena, source, language, sentiment, count(*) FROM items
 GROUP BY GROUPING SETS ((day, design, platform), (day, design, arena), (day, design, source),
                         (day, design, language), (day, design, sentiment))
UNION ALL
SELECT day, design, term, NULL, NULL, NULL, NULL, count(*) FROM items CROSS JOIN LATERAL unnest(terms) term
 GROUP BY day, design, term
UNION ALL
SELECT i.day, i.design, a.name, NULL, NULL, NULL, NULL, count(DISTINCT i.id)
  FROM items i JOIN item_actors ia ON ia.item_id = i.id JOIN actors a ON a.id = ia.actor_id GROUP BY 1, 2, 3
"""

PANDAS_COLUMNS = """
SELECT r.id, CAST(r.published_at AT TIME ZONE 'UTC' AS date) AS day, cr.query_design_id AS design, r.platform,
       r.arena, s.name AS source, r.language, r.sentiment_label AS sentiment, r.search_terms_matched AS terms
  FROM raw_items r JOIN collection_runs cr ON cr.id = r.collection_run_id JOIN sources s ON s.id = r.source_id
"""


def _pandas(engine) -> float:
    import pandas as pd

    started = time.perf_counter()
    with engine.connect() as conn:
        frame = pd.read_sql(PANDAS_COLUMNS, conn)
        links = pd.read_sql(
            "SELECT ia.item_id AS id, a.name FROM item_actors ia JOIN actors a ON a.id = ia.actor_id", conn
        )
    for column in ("platform", "arena", "source", "language", "sentiment"):
        frame.groupby(["day", "design", column], dropna=False).size()
    frame[["day", "design", "terms"]].explode("terms").dropna().groupby(["day", "design", "terms"]).size()
    frame[["id", "day", "design"]].merge(links.drop_duplicates(), on="id").groupby(["day", "design", "name"]).size()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--authors", type=int, default=10_000)
    parser.add_argument("--actors", type=int, default=200)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=3, help="ours and the floor, interleaved; medians reported")
    args = parser.parse_args()
    from sqlalchemy import text

    from observatory_assets.defs.actors.analysis import (
        build_actor_network,
        compute_volume_stats,
        network_metrics,
        store_network_metrics,
    )
    from observatory_assets.lib.sql import ensure_month_partition
    from resources.postgres import engine_for

    load_before = os.getloadavg()[0]
    with scratch_database() as url:
        engine = engine_for(url)
        first = date(2026, 11, 1)
        days = [first + timedelta(days=d) for d in range(args.days)]
        with engine.begin() as conn:
            for month in sorted({day.replace(day=1) for day in days}):
                ensure_month_partition(conn, "raw_items", month)
            conn.exec_driver_sql("SET maintenance_work_mem = '256MB'")
            parameters = {"items": args.items, "authors": args.authors, "actors": args.actors, "days": args.days,
                          "events": max(1, args.items // 50)}  # fmt: skip
            dimensions = conn.execute(
                text("SELECT atttypmod FROM pg_attribute WHERE attrelid = 'events'::regclass AND attname = 'centroid'")
            ).scalar()
            for statement in filter(str.strip, GENERATE.replace("{dimensions}", str(dimensions)).split(";")):
                conn.execute(text(statement), parameters)

        floors, ours = [], []
        for _ in range(args.repeat):  # interleaved: a shared machine's load moves both alike
            started = time.perf_counter()
            with engine.connect() as conn:
                rows = len(conn.execute(text(FLOOR), {"since": first, "until": days[-1] + timedelta(days=1)}).all())
            floors.append(time.perf_counter() - started)
            started = time.perf_counter()
            with engine.begin() as conn:  # a backfill of every day: one run (the asset's single-run backfill policy)
                written = compute_volume_stats(conn, days[0], days[-1])
            ours.append(time.perf_counter() - started)
        floor_s, ours_s = statistics.median(floors), statistics.median(ours)
        ratio = statistics.median(o / f for o, f in zip(ours, floors))
        started = time.perf_counter()
        for day in days[:3]:  # the daily partitions the automation materializes
            with engine.begin() as conn:
                compute_volume_stats(conn, day)
        one_day_s = (time.perf_counter() - started) / 3

        pandas_s = _pandas(engine)

        started = time.perf_counter()
        with engine.begin() as conn:
            graph = build_actor_network(conn)
            built_s = time.perf_counter() - started
            metrics = network_metrics(graph)
            store_network_metrics(conn, graph, metrics)
        network_s = time.perf_counter() - started
        engine.dispose()
    print(
        json.dumps(
            {
                "items": args.items,
                "authors": args.authors,
                "days": args.days,
                "volume_stats": {
                    "ours_s": round(ours_s, 2),
                    "one_day_s": round(one_day_s, 3),
                    "floor_s": round(floor_s, 2),
                    "pandas_s": round(pandas_s, 2),
                    "ratio_to_floor": round(ratio, 2),
                    "speedup_vs_pandas": round(pandas_s / ours_s, 2),
                    "rows": written,
                    "floor_rows": rows,
                },
                "actor_network": {
                    "nodes": graph.number_of_nodes(),
                    "edges": graph.number_of_edges(),
                    "build_s": round(built_s, 2),
                    "total_s": round(network_s, 2),
                },
                "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
            }
        )
    )


if __name__ == "__main__":
    main()
