"""Scale-out on Dagster's Celery executor: the same load in-process, on one Celery worker and on two.

``--runs`` collection runs of ``--items`` generated items each (mixed Danish and English, duplicates and
bad rows) go through ``observatory ingest`` and ``observatory enrich`` (features, embeddings, then the
events clustering) three times, each on a fresh scratch database (bench/common.py) with its own Dagster
instance: with the default executors (in-process), then with ``OBSERVATORY_EXECUTOR=celery`` on one
and on two dagster-celery workers (one pool process each, every queue) behind a real Redis
(Debian's ``redis-server``, started by the compose service's script). Prints one JSON object:

* ``seconds_in_process``, ``seconds_celery_1_worker``, ``seconds_celery_2_workers`` — wall time of
  ingest + enrich, CLI start-up included: in-process and on one worker ``observatory ingest`` then
  ``observatory enrich`` (the runs one after the other); on two workers one ``--run N`` command per
  run, all at once (each enrich command clusters events after its run, one at a time under the lock);
* ``dispatch_overhead`` — 1 worker ÷ in-process (target ≤ 1.25); ``speedup_2_workers`` — 1 worker ÷ 2;
* ``workers_used`` — distinct worker processes in the 2-worker steps' ``worker_pid`` metadata;
* ``identical_results`` — the archives (items, duplicates, rejects, month partitions, features,
  vectors, events; see tests/support/celery.py) of both Celery runs equal the in-process one;
* ``step_seconds`` — per asset, the steps' own ``seconds`` metadata summed over the runs (1 worker);
  ``worker_cpu_seconds`` — CPU time of the worker's pool process (1 worker), for estimating more machines.

    python bench/scale.py --runs 4 --items 25000
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import yaml
from common import ROOT, collect_root, scratch_database

from observatory_assets.defs.ingestion.collect import SourceRequest, collect  # noqa: E402
from observatory_assets.defs.ingestion.demo_data import DEFAULT_ANCHOR, iter_items, write_jsonl  # noqa: E402
from resources.embedded import dagster_instance_yaml  # noqa: E402
from resources.object_store import LocalObjectStore  # noqa: E402
from resources.postgres import engine_for  # noqa: E402
from tests.support.celery import CeleryWorker, RedisServer, archive_fingerprint  # noqa: E402

ASSETS = ("raw_items", "item_features", "item_embeddings", "events")
QUEUES = ["ingest", "enrich", "default"]


def _payloads(root: Path, runs: int, items: int) -> list[Path]:
    paths = []
    for n in range(runs):
        path = root / f"payload-{n}.jsonl"
        write_jsonl(
            path, iter_items(items, seed=200 + n, anchor=DEFAULT_ANCHOR.replace(month=1 + 2 * n), source=f"feed-{n}")
        )
        paths.append(path)
    return paths


def _step_metadata(dagster_home: Path) -> tuple[dict[str, float], set[int]]:
    """(seconds per asset summed over its steps, worker processes that ran them)."""
    import dagster as dg

    seconds, pids = {}, set()
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        for asset in ASSETS:
            records = instance.fetch_materializations(dg.AssetKey(asset), limit=1000).records
            seconds[asset] = round(sum(r.asset_materialization.metadata["seconds"].value for r in records), 2)
            pids |= {r.asset_materialization.metadata["worker_pid"].value for r in records}
    return seconds, pids


def _mode(root: Path, payloads: list[Path], template_url: str, workers: int, redis: RedisServer | None) -> dict:
    """One pass over the load on a fresh database and Dagster instance; ``workers`` = 0 runs in-process."""
    home = root / f"mode-{workers}"
    (home / "dagster_home").mkdir(parents=True)
    with scratch_database(template=template_url) as app_url, scratch_database(migrated=False) as dagster_url:
        (home / "dagster_home" / "dagster.yaml").write_text(yaml.safe_dump(dagster_instance_yaml(dagster_url)))
        env = {**os.environ, "OBSERVATORY_HOME": str(home), "OBSERVATORY_DATABASE_URL": app_url,
               "OBSERVATORY_DAGSTER_DATABASE_URL": dagster_url, "DAGSTER_HOME": str(home / "dagster_home"),
               "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}  # fmt: skip
        engine = engine_for(app_url)
        store = LocalObjectStore(home / "objects")
        run_ids = [
            collect(engine, store, [SourceRequest(f"feed-{n}", "jsonl", path=str(p))]) for n, p in enumerate(payloads)
        ]
        started = []
        if workers:
            redis.start()
            env.update(OBSERVATORY_EXECUTOR="celery", OBSERVATORY_CELERY_BROKER=redis.url(0),
                       OBSERVATORY_CELERY_BACKEND=redis.url(1))  # fmt: skip
            # workers on this machine share its local object directory (across machines: S3)
            started = [CeleryWorker(env, f"w{i}", QUEUES, home, share_home=True).start() for i in range(workers)]
            _wait_until_ready(started)
        try:
            begun = time.perf_counter()
            for command in ("ingest", "enrich"):
                # one command for every run; with two workers one command per run, all at once
                batches = [[command, "--run", str(r)] for r in run_ids] if workers > 1 else [[command]]
                _observatory(env, batches)
            seconds = time.perf_counter() - begun
            cpu = sum(_cpu_seconds(pid) for worker in started for pid in worker.pool_pids())
        finally:
            for worker in started:
                worker.stop()
        step_seconds, pids = _step_metadata(home / "dagster_home")
        fingerprint = archive_fingerprint(engine)
        engine.dispose()
    return {"seconds": seconds, "step_seconds": step_seconds, "pids": pids, "cpu": cpu, "fingerprint": fingerprint}


def _observatory(env: dict, commands: list[list[str]]) -> None:
    started = [subprocess.Popen(["observatory", *c], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True) for c in commands]  # fmt: skip
    for process in started:
        out, _ = process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"{' '.join(process.args)}: {out[-2000:]}")


def _wait_until_ready(workers: list[CeleryWorker], timeout_s: float = 300) -> None:
    """Until every worker says it is ready (its start-up is not the executor's dispatch cost)."""
    deadline = time.monotonic() + timeout_s
    while not all(" ready." in w.log() for w in workers):
        if time.monotonic() > deadline:
            raise RuntimeError("workers did not start: " + " ".join(w.log()[-500:] for w in workers))
        time.sleep(0.5)


def _cpu_seconds(pid: int) -> float:
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.NoSuchProcess:
        return 0.0
    return times.user + times.system


def run(runs: int, items: int) -> dict:
    root = Path(tempfile.mkdtemp(prefix="bench-scale-", dir=collect_root()))
    redis = RedisServer(root)
    try:
        payloads = _payloads(root, runs, items)
        with scratch_database() as template_url:
            engine_for(template_url).dispose()
            in_process = _mode(root, payloads, template_url, 0, None)
            one = _mode(root, payloads, template_url, 1, redis)
            two = _mode(root, payloads, template_url, 2, redis)
    finally:
        redis.stop()
        shutil.rmtree(root, ignore_errors=True)
    return {
        "runs": runs,
        "items_per_run": items,
        "seconds_in_process": round(in_process["seconds"], 2),
        "seconds_celery_1_worker": round(one["seconds"], 2),
        "seconds_celery_2_workers": round(two["seconds"], 2),
        "dispatch_overhead": round(one["seconds"] / in_process["seconds"], 3),
        "speedup_2_workers": round(one["seconds"] / two["seconds"], 3),
        "workers_used": len(two["pids"]),
        "identical_results": one["fingerprint"] == in_process["fingerprint"] == two["fingerprint"],
        "step_seconds": one["step_seconds"],
        "worker_cpu_seconds": round(one["cpu"], 2),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "cpus": os.cpu_count(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=4, help="collection runs (partitions)")
    parser.add_argument("--items", type=int, default=25_000, help="generated items per run")
    args = parser.parse_args(argv)
    print(json.dumps(run(args.runs, args.items)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
