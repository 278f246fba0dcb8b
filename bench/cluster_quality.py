"""Event clustering quality against labelled news stories: B-cubed precision/recall/F1 and ARI.

Runs the real pipeline on a fresh scratch database — collect (one JSONL
payload per source) → raw_items → item_features → item_embeddings → events —
and compares the events with the ``story`` labels of each labelled CSV (columns
``title, source, published_at, story``, optionally ``text``; other columns
such as ``id`` or ``url`` are ignored). Rows that the loader drops as
duplicates are not scored. By default both the project's own set and the
real aggregator headlines of ``../shared/data/uci-news-dev.csv`` (when present)
are scored, each in its own scratch database; ``summary`` gives, per set, the
own-threshold F1 (what a user gets) beside the tuned held-out one and the
own-threshold F1 with that threshold 10 % off either way. The pipeline clusters
with the embedder's own threshold; the threshold sweep replays the clustering
in memory on the pipeline's vectors (the same tracker, checked against the
pipeline's events). Prints one JSON object.

    python bench/cluster_quality.py                                   # both sets, default embedder
    python bench/cluster_quality.py --labelled some.csv --labelled other.csv --embedder e5
    python bench/cluster_quality.py --cohesion-exponent 0      # without the guard against chaining
    python bench/cluster_quality.py --embedder e5 --cache /tmp/cq   # embed once; later runs replay in seconds
    python bench/cluster_quality.py --generate bench/data/generated_labelled.csv   # (re)write the generated set
"""

import argparse
import csv
import hashlib
import json
import random
import re
import sys
import time
import zlib
from collections import Counter, defaultdict
from contextlib import contextmanager
from dataclasses import asdict, fields, replace
from datetime import datetime
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, payload_directory, scratch_database  # noqa: E402

from observatory_assets.defs.enrichment.embedders import BACKENDS, DEFAULT_BACKEND, make_embedder  # noqa: E402
from observatory_assets.defs.enrichment.embeddings import embed_run  # noqa: E402
from observatory_assets.defs.enrichment.features import featurize_run  # noqa: E402
from observatory_assets.defs.events.clustering import (  # noqa: E402
    _PENDING,
    ClusteringParams,
    cluster_events,
    cohesion_exponent_of,
)
from observatory_assets.defs.events.quality import bcubed, f1  # noqa: E402
from observatory_assets.defs.events.tracking import cluster_in_memory  # noqa: E402
from observatory_assets.defs.ingestion.collect import SourceRequest, collect  # noqa: E402
from observatory_assets.defs.ingestion.loading import ingest_collection_run  # noqa: E402
from resources.object_store import LocalObjectStore  # noqa: E402
from resources.postgres import engine_for  # noqa: E402

DEFAULT_LABELLED = (
    ROOT / "bench" / "data" / "news_headlines_labelled.csv",
    ROOT.parent / "shared" / "data" / "uci-news-dev.csv",
)


@contextmanager
def fresh_database():
    """A migrated scratch database (see bench/common.py) and a local object store beside it."""
    with scratch_database() as url, payload_directory("observatory-bench-") as tmp:
        yield engine_for(url), LocalObjectStore(Path(tmp) / "objects"), Path(tmp)


def read_labelled(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def collect_labelled(engine, store, rows: list[dict], workdir: Path) -> int:
    """One collection run with one JSONL payload per source; row ``n`` gets external id ``row-n``."""
    by_source: dict[str, list[str]] = defaultdict(list)
    for n, row in enumerate(rows):
        host = re.sub(r"[^a-z0-9]+", "-", row["source"].lower()).strip("-") or "source"
        record = {"id": f"row-{n}", "title": row["title"], "text": row.get("text") or "",
                  "published_at": row["published_at"], "url": f"https://{host}.example/{n}"}  # fmt: skip
        by_source[row["source"]].append(json.dumps(record, ensure_ascii=False))
    requests = []
    for number, (source, lines) in enumerate(sorted(by_source.items())):
        path = workdir / f"source-{number:04d}.jsonl"  # numbered: a source name may hold "/" ("24/7 Wall St.")
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        requests.append(SourceRequest(source, "jsonl", path=str(path)))
    return collect(engine, store, requests)


def adjusted_rand_index(truth: dict, predicted: dict) -> float:
    def pairs(n: int) -> float:
        return n * (n - 1) / 2

    items = list(truth)
    index = sum(pairs(c) for c in Counter((truth[i], predicted[i]) for i in items).values())
    a = sum(pairs(c) for c in Counter(truth[i] for i in items).values())
    b = sum(pairs(c) for c in Counter(predicted[i] for i in items).values())
    expected = a * b / pairs(len(items)) if len(items) > 1 else 0.0
    maximum = (a + b) / 2
    return 1.0 if maximum == expected else (index - expected) / (maximum - expected)


def half_of(story: str) -> int:
    """Which half a story belongs to (0 or 1): a hash of its id, so the split is fixed and label-blind."""
    return zlib.crc32(story.encode()) & 1


def score(truth: dict, predicted: dict, items) -> dict:
    """B-cubed precision, recall and F1 and ARI over ``items`` (events restricted to those items)."""
    sub_truth = {i: truth[i] for i in items}
    sub_pred = {i: predicted[i] for i in items}
    precision, recall = bcubed(sub_truth, sub_pred)
    return {"bcubed_precision": round(precision, 4), "bcubed_recall": round(recall, 4),
            "bcubed_f1": round(f1(precision, recall), 4),
            "ari": round(adjusted_rand_index(sub_truth, sub_pred), 4)}  # fmt: skip


def _recluster(engine, embedder, params: ClusteringParams) -> dict:
    """Cluster every embedded item afresh with ``params``; returns external id → event id."""
    with engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM event_items")
        conn.exec_driver_sql("DELETE FROM events")
    cluster_events(engine, embedder.name, embedder.dimensions, params)
    with engine.connect() as conn:
        assigned = conn.exec_driver_sql(
            "SELECT r.external_id, x.event_id FROM raw_items r JOIN event_items x ON x.item_id = r.id"
        ).all()
    return dict(assigned)


def _embedded(engine, embedder_name: str) -> list[tuple]:
    """Every embedded item in the order clustering takes them: (external id, time, hash, source, vector)."""
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(
            f"SELECT r.external_id, s.at, s.content_hash, s.source_id, e.embedding::text FROM ({_PENDING}) s "
            "JOIN raw_items r ON r.id = s.item_id JOIN item_embeddings e ON e.item_id = s.item_id "
            "AND e.embedder = %(embedder)s ORDER BY s.at, s.content_hash",
            {"embedder": embedder_name},
        ).all()
    return [
        (k, at, bytes(h), source, np.array(json.loads(v), np.float32).astype(np.float64))
        for k, at, h, source, v in rows
    ]


def replay(items: list[tuple], params: ClusteringParams) -> dict:
    """The clustering of ``items`` (see :func:`_embedded`) redone in memory (the same tracker as the
    pipeline's, without Postgres): external id → event id."""
    numbered = [(n, *item[1:]) for n, item in enumerate(items)]
    held = cluster_in_memory(numbered, len(items[0][4]) if items else 0, params)
    return {items[n][0]: event for n, event in held.items()}


def same_partition(a: dict, b: dict) -> bool:
    """Whether two clusterings (item → cluster id) group the same items together, whatever their ids."""
    return a.keys() == b.keys() and len(set(a.values())) == len(set(b.values())) == len({(a[i], b[i]) for i in a})


_CACHE_SCALARS = (
    "embedder",
    "threshold",
    "merge_margin",
    "cohesion_exponent",
    "clustering_seconds",
    "embed_items_per_s",
)


def _write_cache(path: Path, outcome: dict) -> None:
    """Keep ``embed_labelled``'s outcome as plain arrays (no pickle: a cache file is only data)."""
    items = outcome["items"]
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        path,
        keys=np.array([i[0] for i in items], dtype=str),
        times=np.array([i[1].isoformat() for i in items], dtype=str),
        hashes=np.array([i[2].hex() for i in items], dtype=str),
        sources=np.array([i[3] for i in items], dtype=np.int64),
        vectors=np.array([i[4] for i in items], dtype=np.float32).reshape(len(items), -1),
        meta=np.array(json.dumps({k: outcome[k] for k in _CACHE_SCALARS})),
    )


def _read_cache(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as saved:
        keys = saved["keys"].tolist()
        items = [(k, datetime.fromisoformat(t), bytes.fromhex(h), int(s), v.astype(np.float64))
                 for k, t, h, s, v in zip(keys, saved["times"], saved["hashes"], saved["sources"], saved["vectors"])]  # fmt: skip
        # the pipeline's events of the run that filled the cache (maybe older code): not compared again
        return {**json.loads(str(saved["meta"])), "items": items, "pipeline": None}


def embed_labelled(rows: list[dict], embedder_name: str, cache: Path | None) -> dict:
    """Run the pipeline on ``rows`` up to the embeddings and cluster them with the embedder's own
    threshold (the real path, timed); returns the embedded items for replay with the embedder's
    threshold and margin, the pipeline's clustering and its speeds. With ``cache`` (a file) the result
    is read from it when present, else written to it: a later run skips the pipeline (the e5 embedder
    takes minutes) and replays the clustering only (``pipeline`` is then None: not compared again)."""
    if cache is not None and cache.exists():
        return _read_cache(cache)
    with fresh_database() as (engine, store, workdir):
        run_id = collect_labelled(engine, store, rows, workdir)
        ingest_collection_run(engine, store, run_id)
        featurize_run(engine, run_id)
        embedder = make_embedder(embedder_name, engine)
        embedded = embed_run(engine, embedder, run_id)
        exponent = cohesion_exponent_of(embedder)
        params = ClusteringParams(
            embedder.join_threshold, merge_margin=embedder.merge_margin, cohesion_exponent=exponent
        )
        items = _embedded(engine, embedder.name)
        started = time.perf_counter()
        pipeline = _recluster(engine, embedder, params)
        outcome = {
            "embedder": embedder.name, "threshold": embedder.join_threshold, "merge_margin": embedder.merge_margin,
            "cohesion_exponent": exponent,
            "items": items, "pipeline": pipeline,
            "clustering_seconds": round(time.perf_counter() - started, 3),
            "embed_items_per_s": round(embedded.embedded / max(embedded.seconds, 1e-9), 1),
        }  # fmt: skip
    if cache is not None:
        _write_cache(cache, outcome)
    return outcome


def diagnostics(rows: list[dict], truth: dict, predicted: dict, top: int = 5) -> dict:
    """The stories split into the most events and the events mixing the most stories, with titles."""
    title = {f"row-{n}": row["title"] for n, row in enumerate(rows)}
    events_of: dict[str, Counter] = defaultdict(Counter)
    stories_of: dict[int, Counter] = defaultdict(Counter)
    for item, story in truth.items():
        events_of[story][predicted[item]] += 1
        stories_of[predicted[item]][story] += 1
    split = sorted(events_of.items(), key=lambda kv: (-len(kv[1]), kv[0]))[:top]
    mixed = sorted(stories_of.items(), key=lambda kv: (-len(kv[1]), -sum(kv[1].values()), kv[0]))[:top]
    example = {(predicted[i], truth[i]): title[i] for i in sorted(truth)}
    return {
        "most_split_stories": [
            {"story": story, "items": sum(c.values()), "events": len(c), "largest_part": max(c.values())}
            for story, c in split
        ],
        "most_mixed_events": [
            {
                "event": event,
                "items": sum(c.values()),
                "stories": len(c),
                "titles": [example[(event, s)][:90] for s, _ in c.most_common(3)],
            }  # fmt: skip
            for event, c in mixed
        ],
    }


def held_out(truth: dict, sweep: dict) -> list[dict]:
    """Tune the threshold on one half of the stories and score it on the other, both ways."""
    halves = [[i for i in truth if half_of(truth[i]) == h] for h in (0, 1)]
    by_half = []
    for tune, report in ((0, 1), (1, 0)):
        tuned = {t: score(truth, p, halves[tune])["bcubed_f1"] for t, p in sweep.items()}
        best = max(sorted(tuned), key=lambda t: tuned[t])
        held = score(truth, sweep[best], halves[report])
        by_half.append({"tuned_on": tune, "reported_on": report, "threshold": best, "tuned_bcubed_f1": tuned[best],
                        "stories": len({truth[i] for i in halves[report]}), **held})  # fmt: skip
    return by_half


def evaluate(
    rows: list[dict], embedder_name: str, overrides: dict, grid: list[float], cache: Path | None = None
) -> dict:
    """Run the pipeline on ``rows`` once, then score its events: with the embedder's own threshold, and
    honestly, tuning the threshold on one half of the stories and reporting on the other, both ways.

    ``bcubed_f1`` is the mean held-out F1 of the two halves; ``tuned_bcubed_f1`` the mean F1 on the half
    the threshold was tuned on; ``threshold_stability`` the own-threshold F1 with that threshold 10 %
    lower and higher (how much a held-out set whose calibration lands a little off would move).
    ``overrides`` change ClusteringParams' other defaults. The sweep is replayed in memory on the
    pipeline's vectors; ``replay_matches_pipeline`` checks that the replay gives the pipeline's events."""
    started = time.perf_counter()
    run = embed_labelled(rows, embedder_name, cache)
    base = {"threshold": run["threshold"], "merge_margin": run["merge_margin"],
            "cohesion_exponent": run["cohesion_exponent"], **overrides}  # fmt: skip
    default_params = ClusteringParams(**base)
    predicted = replay(run["items"], default_params)
    sweep = {t: replay(run["items"], ClusteringParams(**{**base, "threshold": t})) for t in grid}
    truth = {f"row-{n}": row["story"] for n, row in enumerate(rows) if f"row-{n}" in predicted}
    halves = [[i for i in truth if half_of(truth[i]) == h] for h in (0, 1)]
    by_half = held_out(truth, sweep)
    stability = {
        f"x{factor}": score(truth, replay(run["items"], replace(default_params, threshold=base["threshold"] * factor)),
                            list(truth))["bcubed_f1"]
        for factor in (0.9, 1.1)
    }  # fmt: skip
    return {
        "labelled": len(rows),
        "items": len(truth),
        "stories": len(set(truth.values())),
        "bcubed_f1": round(sum(h["bcubed_f1"] for h in by_half) / 2, 4),
        "tuned_bcubed_f1": round(sum(h["tuned_bcubed_f1"] for h in by_half) / 2, 4),
        "held_out": by_half,
        "own_threshold": {
            "events": len(set(predicted.values())),
            **score(truth, predicted, list(truth)),
            "halves_bcubed_f1": [score(truth, predicted, h)["bcubed_f1"] for h in halves],
            "threshold_stability": stability,
        },  # fmt: skip
        "replay_matches_pipeline": None
        if overrides or run["pipeline"] is None
        else same_partition(predicted, run["pipeline"]),
        "sweep_bcubed_f1": {str(t): score(truth, p, list(truth))["bcubed_f1"] for t, p in sweep.items()},
        "embedder": run["embedder"],
        "params": asdict(default_params),
        "diagnostics": diagnostics(rows, truth, predicted),
        "embed_items_per_s": run["embed_items_per_s"],
        "clustering_seconds": run["clustering_seconds"],
        "seconds": round(time.perf_counter() - started, 2),
    }


def write_generated(path: Path, stories: int = 60, seed: int = 11) -> int:
    """A labelled set from the demo generator: each story retold by several demo sources, in Danish and
    English paraphrases, plus one-off items as noise."""
    from observatory_assets.defs.ingestion.demo_data import DEFAULT_ANCHOR, SOURCES, _item, make_stories

    rng = random.Random(seed)
    story_list = make_stories(stories + stories // 2, rng, DEFAULT_ANCHOR, days=45)
    rows = []
    for n, story in enumerate(story_list):
        tellings = rng.randrange(3, 9) if n < stories else 1  # the rest are noise: told once
        for k in range(tellings):
            source, _, language, _ = rng.choice(SOURCES)
            language = rng.choice(["da", "en"]) if language == "mixed" else language
            item = _item(story, source, language, rng, n * 100 + k, text_chars=rng.randrange(0, 400))
            rows.append({"title": item["title"], "text": item["text"], "source": source,
                         "published_at": item["published_at"], "story": f"s{story.story_id}"})  # fmt: skip
    rows.sort(key=lambda r: r["published_at"])
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as out:
        writer = csv.DictWriter(out, ["title", "text", "source", "published_at", "story"])
        writer.writeheader()
        writer.writerows(rows)
    return len(rows)


def cached(directory: Path | None, labelled: Path, embedder_name: str) -> Path | None:
    """The cache file of one labelled set's embedded items: named by the set's content and the embedder."""
    if directory is None:
        return None
    digest = hashlib.sha256(labelled.read_bytes()).hexdigest()[:16]
    return directory / f"{labelled.stem}-{embedder_name}-{digest}.npz"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--labelled", type=Path, action="append", help="a labelled CSV (repeatable); default: the own and UCI sets"
    )
    parser.add_argument("--embedder", default=DEFAULT_BACKEND, choices=BACKENDS)
    parser.add_argument("--grid", default="0.02:0.6:0.02", help="thresholds tuned over, start:stop:step")
    parser.add_argument("--generate", type=Path, help="write the generated labelled set to this path and exit")
    parser.add_argument(
        "--cache", type=Path, help="keep each set's embedded items in this directory and replay them on later runs"
    )
    for f in fields(ClusteringParams):
        kind = float if f.name == "threshold" else type(f.default)
        parser.add_argument(
            f"--{f.name.replace('_', '-')}",
            type=kind,
            help="default: the embedder's" if f.name in ("threshold", "merge_margin") else f"default: {f.default}",
        )
    args = parser.parse_args(argv)
    if args.generate:
        print(json.dumps({"written": write_generated(args.generate), "path": str(args.generate)}))
        return 0
    overrides = {f.name: getattr(args, f.name) for f in fields(ClusteringParams) if getattr(args, f.name) is not None}
    start, stop, step = (float(v) for v in args.grid.split(":"))
    grid = [round(start + k * step, 4) for k in range(int(round((stop - start) / step)) + 1)]
    paths = args.labelled or [path for path in DEFAULT_LABELLED if path.exists()]
    sets = {
        path.stem: evaluate(
            read_labelled(path), args.embedder, overrides, grid, cached(args.cache, path, args.embedder)
        )
        for path in paths
    }
    summary = {
        name: {
            "own_threshold_bcubed_f1": r["own_threshold"]["bcubed_f1"],
            "held_out_bcubed_f1": r["bcubed_f1"],
            "own_threshold_at_0.9x_1.1x": list(r["own_threshold"]["threshold_stability"].values()),
        }  # fmt: skip
        for name, r in sets.items()
    }
    print(json.dumps({"embedder": args.embedder, "summary": summary, "sets": sets}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
