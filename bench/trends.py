"""Throughput of the trend ledger: evidence matching plus state update, a day's snapshot, a year's backfill.

On a fresh scratch database (bench/common.py): ``--events`` events over a year (one to three items each,
Danish and English, a tenth of them with near-copies from other outlets) and ``--trends`` trends with a
Danish and an English term each, which 1% of the events each mention. Timed:

* ``events_per_s`` — ``update_evidence`` over every event (matching with stemming, corroboration,
  novelty, cap, state), first run for the trends;
* ``incremental_events_per_s`` — the next run after 1% of the events changed;
* ``naive_events_per_s`` — what one would otherwise write: per event and trend, one full-text query
  round trip (on a sample), and ``speedup_vs_naive``;
* ``snapshot_1000_trends_s`` — one day's snapshot of ``--snapshot-trends`` trends with 100 evidence each;
* ``backfill_year_50_trends_s`` — 365 days of snapshots for the first 50 trends, one statement.

With ``--labelled`` it measures evidence *precision* instead, on labelled news (columns ``title, source,
published_at, story``; by default the project's own set and the UCI dev headlines): the real pipeline
(collect → events, bench/cluster_quality.py) runs on a scratch database, and each of the ``--targets``
largest stories gets a trend whose one term is its most distinctive title word (the word in most of
its titles of those used nine times in ten in this story's titles), so the targets are derived, not picked.
A trend's evidence covers the items of the events it matched: precision is the share of those items
that tell the target story, recall the share of the story's items covered (micro-averaged).

    python bench/trends.py --events 100000 --trends 50
    python bench/trends.py --labelled                       # evidence precision and recall
"""

import argparse
import json
import re
import sys
import tempfile
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, scratch_database, timed  # noqa: E402

from observatory_assets.defs.trends.catalog import sync_trends  # noqa: E402
from observatory_assets.defs.trends.evidence import update_evidence  # noqa: E402
from observatory_assets.defs.trends.ledger import write_snapshots  # noqa: E402
from resources.postgres import engine_for  # noqa: E402

sys.path.insert(0, str(ROOT))
from tests.support.trend_world import bulk_world, story_vector  # noqa: E402

START = datetime(2025, 11, 1, tzinfo=UTC)  # a year that ended a month before the measurement
WORDS = {
    "da": "regeringen minister aftale kritikere borgere kommune forslag debat udvalg beslutning budget".split(),
    "en": "government minister agreement critics citizens council proposal debate committee decision".split(),
}
TOPICS = {"da": "strejker", "en": "strikes"}  # inflected in the texts, stemmed in the terms
TREND = """\
name: bench-{k}
title: Benchmark trend {k}
question: Will topic {k} happen?
baseline_probability: 0.2
half_life_days: 30
indicators:
  - name: signal
    direction: up
    likelihood_ratio: 2.0
    terms:
      da: ["emne{k} strejke"]
      en: ["topic{k} strike"]
"""


def build_world(engine, n_events: int, n_trends: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    items, events = [], []
    stories = [story_vector(f"story{s}") for s in range(2000)]
    for e in range(n_events):
        language = "da" if e % 2 else "en"
        words = " ".join(rng.choice(WORDS[language], 12))
        if rng.random() < 0.5:  # half the events mention one trend's topic: 1% of the events per trend
            k = int(rng.integers(n_trends))
            words += f" {'emne' if language == 'da' else 'topic'}{k} {TOPICS[language]}"
        at = START + timedelta(seconds=float(rng.uniform(0, 365 * 86400)))
        size = 1 + int(rng.random() < 0.3) + int(rng.random() < 0.1)
        members = []
        for r in range(size):
            members.append(len(items))
            copy = r > 0 and rng.random() < 0.3
            items.append({"source": f"outlet{int(rng.integers(300))}", "title": f"event {e}" + ("" if copy else f" {r}"),
                          "body": words, "language": language, "at": at + timedelta(minutes=r),
                          "vector": story_vector(f"story{e % 2000}", noise=0.05 if copy else 0.5,
                                                 noise_key=f"{e}-{r}") if r else stories[e % 2000]})  # fmt: skip
        events.append(members)
    with engine.begin() as conn:  # trends read vectors by id: the HNSW graphs would only slow this setup down
        conn.execute(text("DROP INDEX item_embeddings_hnsw, events_centroid_hnsw"))
    bulk_world(engine, {f"outlet{s}": float(rng.uniform(0.3, 0.9)) for s in range(300)}, items, events)


def naive_rate(engine, n_trends: int, sample: int) -> float:
    """Events/s of per-(event, trend) round trips: does any item of the event match the trend's terms?"""
    with engine.connect() as conn:
        event_ids = conn.execute(text("SELECT id FROM events ORDER BY id LIMIT :n"), {"n": sample}).scalars().all()
        started = time.perf_counter()
        for event_id in event_ids:
            for k in range(n_trends):
                conn.execute(
                    text(
                        "SELECT EXISTS (SELECT 1 FROM event_items x JOIN raw_items r ON r.id = x.item_id "
                        "WHERE x.event_id = :e AND r.search_vector @@ (phraseto_tsquery(r.text_search_config, :da) "
                        "|| phraseto_tsquery(r.text_search_config, :en)))"
                    ),
                    {"e": event_id, "da": f"emne{k} strejke", "en": f"topic{k} strike"},
                ).scalar_one()
        return sample / (time.perf_counter() - started)


def synthetic_ledger(engine, n_trends: int, per_trend: int) -> None:
    """``n_trends`` more trends with ``per_trend`` evidence rows each over the year (for the snapshot)."""
    with engine.begin() as conn:
        conn.execute(
            text(
                """
                WITH t AS (
                    INSERT INTO trends (name, title, question, baseline_probability, baseline_log_odds,
                                        current_log_odds, half_life_hours, definition, active)
                    SELECT 'snapshot-' || k, 'Snapshot trend ' || k, '?', 0.2, ln(0.25), ln(0.25), 720, '{}', true
                      FROM generate_series(1, :n) k RETURNING id)
                INSERT INTO trend_evidence (trend_id, event_id, signal, event_at, credibility, corroboration, novelty,
                                            severity, raw_delta, delta_log_odds, reasoning)
                SELECT t.id, -(t.id * 100000 + j), 'signal', :start + random() * interval '365 days', 0.5, 0.5, 1, 1,
                       0.2, (random() - 0.4) * 0.5, 'synthetic'
                  FROM t, generate_series(1, :per) j
                """
            ),
            {"n": n_trends, "per": per_trend, "start": START},
        )


def distinctive_word(inside: Counter, elsewhere: Counter) -> str | None:
    """The word (4+ letters) in most of a story's titles of those that are nine times in ten in the story's."""
    for word, count in sorted(inside.items(), key=lambda kv: (-kv[1], kv[0])):
        if elsewhere[word] <= 0.1 * count and count >= 3:
            return word
    return None


def story_targets(rows: list[dict], count: int) -> dict[str, str]:
    """Story → the term of its trend, for the ``count`` largest stories (see module)."""
    titles: dict[str, list[str]] = defaultdict(list)
    for row in rows:
        titles[row["story"]].append(row["title"])
    everywhere = Counter(w for row in rows for w in set(re.findall(r"[a-zæøå]{4,}", row["title"].lower())))
    targets = {}
    for story, own in sorted(titles.items(), key=lambda kv: (-len(kv[1]), kv[0]))[:count]:
        inside = Counter(w for t in own for w in set(re.findall(r"[a-zæøå]{4,}", t.lower())))
        word = distinctive_word(inside, everywhere - inside)
        if word:
            targets[story] = word
    return targets


def evidence_precision(rows: list[dict], count: int) -> dict:
    """Evidence precision and recall of derived trend targets on one labelled set (see module)."""
    from cluster_quality import collect_labelled, fresh_database

    from observatory_assets.defs.enrichment.embedders import DEFAULT_BACKEND, make_embedder
    from observatory_assets.defs.enrichment.embeddings import embed_run
    from observatory_assets.defs.enrichment.features import featurize_run
    from observatory_assets.defs.events.clustering import ClusteringParams, cluster_events
    from observatory_assets.defs.ingestion.loading import ingest_collection_run

    targets = story_targets(rows, count)
    with fresh_database() as (engine, store, workdir):
        run_id = collect_labelled(engine, store, rows, workdir)
        ingest_collection_run(engine, store, run_id)
        featurize_run(engine, run_id)
        embedder = make_embedder(DEFAULT_BACKEND, engine)
        embed_run(engine, embedder, run_id)
        cluster_events(engine, embedder.name, embedder.dimensions,
                       ClusteringParams(threshold=embedder.join_threshold, merge_margin=embedder.merge_margin))  # fmt: skip
        folder = workdir / "trends"
        folder.mkdir()
        for k, word in enumerate(targets.values()):
            (folder / f"target-{k}.yaml").write_text(TARGET.format(k=k, word=word))
        sync_trends(engine, folder)
        update_evidence(engine)
        with engine.connect() as conn:
            covered = conn.execute(
                text(
                    "SELECT t.name, r.external_id FROM trend_evidence e JOIN trends t ON t.id = e.trend_id "
                    "CROSS JOIN unnest(e.item_ids) AS i (item_id) JOIN raw_items r ON r.id = i.item_id "
                    "WHERE e.retracted_at IS NULL"
                )
            ).all()
    story_of = {f"row-{n}": row["story"] for n, row in enumerate(rows)}
    evidence: dict[str, set] = defaultdict(set)
    for name, external in covered:
        evidence[name].add(external)
    per_trend, hits, shown, wanted = [], 0, 0, 0
    for k, (story, word) in enumerate(targets.items()):
        items = evidence[f"target-{k}"]
        right = sum(story_of[i] == story for i in items)
        size = sum(s == story for s in story_of.values())
        hits, shown, wanted = hits + right, shown + len(items), wanted + size
        per_trend.append({"story": story[:12], "term": word, "story_items": size, "evidence_items": len(items),
                          "precision": round(right / len(items), 3) if items else None,
                          "recall": round(right / size, 3)})  # fmt: skip
    return {"targets": len(targets), "precision": round(hits / max(shown, 1), 4),
            "recall": round(hits / max(wanted, 1), 4), "trends": per_trend}  # fmt: skip


TARGET = """\
name: target-{k}
title: Target {k}
question: Is story {k} told?
baseline_probability: 0.2
half_life_days: 30
indicators:
  - name: told
    direction: up
    likelihood_ratio: 2.0
    terms:
      da: ["{word}"]
      en: ["{word}"]
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labelled", type=Path, nargs="*", help="measure evidence precision on labelled CSVs")
    parser.add_argument("--targets", type=int, default=12, help="stories given a trend, per labelled set")
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--trends", type=int, default=50)
    parser.add_argument("--snapshot-trends", type=int, default=1000)
    parser.add_argument("--naive-sample", type=int, default=100)
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    if args.labelled is not None:
        from cluster_quality import DEFAULT_LABELLED, read_labelled

        paths = args.labelled or [path for path in DEFAULT_LABELLED if path.exists()]
        sets = {path.stem: evidence_precision(read_labelled(path), args.targets) for path in paths}
        print(json.dumps({"sets": sets}))
        return
    results: dict = {"events": args.events, "trends": args.trends}
    with scratch_database() as url, tempfile.TemporaryDirectory() as folder:
        engine = engine_for(url)
        with timed(results, "setup_s"):
            build_world(engine, args.events, args.trends, args.seed)
            for k in range(args.trends):
                Path(folder, f"bench-{k}.yaml").write_text(TREND.format(k=k))
            sync_trends(engine, folder)
            with engine.begin() as conn:
                conn.execute(text("ANALYZE"))
        first = update_evidence(engine)
        results["events_per_s"] = round(first.events_examined / first.seconds, 1)
        results["evidence_rows"] = first.added
        results["evidence_s"] = round(first.seconds, 2)
        with engine.begin() as conn:
            conn.execute(
                text("UPDATE events SET updated_at = clock_timestamp() WHERE id % 100 = 0 AND updated_at < now()")
            )
        later = update_evidence(engine)
        results["incremental_events"] = later.events_examined
        results["incremental_events_per_s"] = round(later.events_examined / later.seconds, 1)
        results["naive_events_per_s"] = round(naive_rate(engine, args.trends, args.naive_sample), 1)
        results["speedup_vs_naive"] = round(results["events_per_s"] / results["naive_events_per_s"], 1)

        with engine.connect() as conn:
            bench_ids = conn.execute(text("SELECT id FROM trends ORDER BY id LIMIT 50")).scalars().all()
        day = (START + timedelta(days=365)).date()
        with timed(results, "backfill_year_50_trends_s"):
            backfill = write_snapshots(engine, [day - timedelta(days=n) for n in range(365)], bench_ids)
        results["backfill_rows"] = backfill.written
        synthetic_ledger(engine, args.snapshot_trends - args.trends, 100)
        with engine.begin() as conn:
            conn.execute(text("ANALYZE trend_evidence"))
            active = conn.execute(text("SELECT count(*) FROM trends WHERE active")).scalar_one()
        with timed(results, "snapshot_1000_trends_s"):
            snapshot = write_snapshots(engine, [day + timedelta(days=1)])
        results["snapshot_trends"] = active
        results["snapshot_rows"] = snapshot.written
    for key in ("setup_s", "backfill_year_50_trends_s", "snapshot_1000_trends_s"):
        results[key] = round(results[key], 3)
    results["targets_met"] = (
        results["events_per_s"] >= 5000
        and results["snapshot_1000_trends_s"] < 1
        and results["backfill_year_50_trends_s"] < 60
    )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
