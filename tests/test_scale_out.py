"""Scale-out on Dagster's Celery executor, shown running: a real Redis (Debian's ``redis-server``, started
by the compose service's script), dagster-celery workers as separate processes on their own empty
homes, the ``observatory`` CLI orchestrating with ``OBSERVATORY_EXECUTOR=celery``, payloads in a real
S3 server. The archive they build equals an in-process run's, single writers stay single, and a
killed worker or a stopped broker loses nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import uuid
from datetime import UTC, datetime

import dagster as dg
import pytest
import redis
from sqlalchemy import text

from observatory_assets.defs.enrichment.embedders import make_embedder
from observatory_assets.defs.enrichment.embeddings import embed_run
from observatory_assets.defs.enrichment.features import featurize_run
from observatory_assets.defs.events.assets import EventsConfig
from observatory_assets.defs.events.clustering import cluster_events
from observatory_assets.defs.events.integrity import check_items_in_one_event
from observatory_assets.defs.ingestion.collect import SourceRequest, collect
from observatory_assets.defs.ingestion.demo_data import iter_items, write_jsonl
from observatory_assets.defs.ingestion.integrity import key_conflicts, unbalanced_runs
from observatory_assets.defs.ingestion.loading import ingest_collection_run
from resources.object_store import LocalObjectStore, S3ObjectStore
from resources.postgres import engine_for
from tests.support.celery import CeleryWorker, RedisServer, archive_fingerprint
from tests.support.helpers import ROOT, create_database, drop_database, poll_until

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def celery_env(dagster_env, s3_server, redis_server) -> dict[str, str]:
    """``dagster_env`` with the heavy jobs on Celery (an empty broker) and the objects in S3."""
    redis_server.start()
    with redis.Redis.from_url(redis_server.url(0)) as broker:  # closed, not left to the collector
        broker.flushall()
    return {
        **dagster_env,
        "OBSERVATORY_EXECUTOR": "celery",
        "OBSERVATORY_CELERY_BROKER": redis_server.url(0),
        "OBSERVATORY_CELERY_BACKEND": redis_server.url(1),
        "OBSERVATORY_S3_ENDPOINT": s3_server.endpoint,
        "OBSERVATORY_S3_ACCESS_KEY": s3_server.access_key,
        "OBSERVATORY_S3_SECRET_KEY": s3_server.secret_key,
        "OBSERVATORY_S3_BUCKET": s3_server.bucket,
    }


@pytest.fixture
def start_worker(celery_env, tmp_path):
    started: list[CeleryWorker] = []

    def start(name: str, queues: list[str]) -> CeleryWorker:
        started.append(CeleryWorker(celery_env, name, queues, tmp_path).start())
        return started[-1]

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture
def s3_store(s3_server) -> S3ObjectStore:
    return S3ObjectStore(s3_server.client(), s3_server.bucket)


def write_payloads(tmp_path, runs: int, items: int) -> list[list[SourceRequest]]:
    """Payloads of ``runs`` collection runs (one month apart, so their loads create month partitions at
    the same time), each with duplicates and bad rows, none shared between runs."""
    payloads = []
    for n in range(runs):
        path = tmp_path / f"payload-{n}.jsonl"
        anchor = datetime(2025, 1 + 2 * n, 20, 12, tzinfo=UTC)
        write_jsonl(path, iter_items(items, seed=100 + n, anchor=anchor, source=f"feed-{n}", text_chars=300))
        payloads.append([SourceRequest(f"feed-{n}", "jsonl", path=str(path))])
    return payloads


def observatory(env, *args, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run(["observatory", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def step_workers(dagster_home: str, asset: str) -> set[int]:
    """The processes (``worker_pid`` metadata) that materialized ``asset``."""
    with dg.DagsterInstance.from_config(dagster_home) as instance:
        records = instance.fetch_materializations(dg.AssetKey(asset), limit=1000).records
        return {r.asset_materialization.metadata["worker_pid"].value for r in records}


def in_process_archive(pg_server, migrated_template, tmp_path, payloads) -> dict:
    """The archive of the same payloads ingested, enriched and clustered in this process, one run after
    the other, in a database of its own."""
    name = f"reference_{uuid.uuid4().hex[:8]}"
    engine = engine_for(create_database(pg_server, name, template=migrated_template))
    try:
        store = LocalObjectStore(tmp_path / "reference-objects")
        run_ids = [collect(engine, store, requests) for requests in payloads]
        for run_id in run_ids:
            ingest_collection_run(engine, store, run_id)
        for run_id in run_ids:
            featurize_run(engine, run_id)
            embed_run(engine, make_embedder("lexical", engine), run_id)
        embedder = make_embedder("lexical", engine)
        cluster_events(
            engine,
            embedder.name,
            embedder.dimensions,
            EventsConfig().params(embedder.join_threshold, embedder.merge_margin),
        )
        return archive_fingerprint(engine)
    finally:
        engine.dispose()
        drop_database(pg_server, name)


def test_four_runs_ingested_and_enriched_on_two_workers_equal_an_in_process_run(
    celery_env, start_worker, engine, s3_store, tmp_path, pg_server, migrated_template
):
    ingest = start_worker("ingest", ["ingest"])
    enrich = start_worker("enrich", ["enrich", "default"])
    payloads = write_payloads(tmp_path, runs=4, items=300)
    for requests in payloads:
        collect(engine, s3_store, requests)

    ingested = observatory(celery_env, "ingest")
    assert ingested.returncode == 0, ingested.stdout + ingested.stderr + ingest.log()
    assert ingested.stdout.count(": ok") == 4, ingested.stdout
    enriched = observatory(celery_env, "enrich")
    assert enriched.returncode == 0, enriched.stdout + enriched.stderr + enrich.log()
    assert enriched.stdout.count(": ok") == 5, enriched.stdout  # four runs, then events

    home = celery_env["DAGSTER_HOME"]
    assert step_workers(home, "raw_items") <= ingest.pool_pids() and ingest.pool_pids()
    for asset in ("item_features", "item_embeddings", "events"):
        assert step_workers(home, asset) <= enrich.pool_pids() and enrich.pool_pids(), asset
    with engine.connect() as conn:
        assert unbalanced_runs(conn) == (4, {})
        assert not any(key_conflicts(conn).values())
    reference = in_process_archive(pg_server, migrated_template, tmp_path, payloads)
    assert archive_fingerprint(engine) == reference
    assert reference["items"][0] > 1000 and reference["events"][0] > 0 and reference["rejected"][0] > 0


def concurrently(env, *commands: list[str]) -> list[subprocess.CompletedProcess]:
    """``observatory`` commands started together, each orchestrating its own run on the workers."""
    started = [subprocess.Popen(["observatory", *c], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True) for c in commands]  # fmt: skip
    return [subprocess.CompletedProcess(p.args, p.wait(timeout=600), *p.communicate()) for p in started]


def test_single_writers_stay_single_across_two_workers(
    celery_env, start_worker, engine, s3_store, tmp_path, pg_server, migrated_template
):
    """Two loads create their month partitions (the owner's ``ensure_month_partition``) and two runs
    cluster events (``pg_advisory_xact_lock``) at the same time on two workers: the archive is the one
    a single process builds."""
    workers = [start_worker(name, ["ingest", "enrich", "default"]) for name in ("left", "right")]
    payloads = write_payloads(tmp_path, runs=2, items=300)
    run_ids = [collect(engine, s3_store, requests) for requests in payloads]
    for command in ("ingest", "enrich"):
        for done in concurrently(celery_env, *[[command, "--run", str(r)] for r in run_ids]):
            assert done.returncode == 0, done.stdout + done.stderr
    home = celery_env["DAGSTER_HOME"]
    pids = set().union(*(step_workers(home, asset) for asset in ("raw_items", "item_features", "events")))
    assert all(pids & w.pool_pids() for w in workers), "both workers took steps"
    with engine.connect() as conn:
        assert unbalanced_runs(conn) == (2, {})
    embedder = make_embedder("lexical", engine)
    assert not any(check_items_in_one_event(engine, embedder.name, None).values())
    assert archive_fingerprint(engine) == in_process_archive(pg_server, migrated_template, tmp_path, payloads)


def engine_events(dagster_home: str, marker: str) -> list[dg.EventLogEntry]:
    """Every event of every run whose message contains ``marker``."""
    with dg.DagsterInstance.from_config(dagster_home) as instance:
        return [
            entry
            for run in instance.get_runs()
            for entry in instance.all_logs(run.run_id)
            if entry.dagster_event is not None and marker in (entry.dagster_event.message or "")
        ]


def wait_for(condition, timeout_s: float, what: str):
    """``condition()``'s first truthy value (``timeout_s``: a guard against hanging)."""
    found = poll_until(condition, timeout_s, 0.2)
    assert found, f"timed out waiting for {what}"
    return found


#: The backend holding a load's transaction lock (``ingest_collection_run``), with what it is doing.
LOAD_HOLDER = """
    SELECT a.state, a.query FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
     WHERE l.locktype = 'advisory' AND l.granted AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
       AND l.classid = hashtext('observatory.ingest')::oid AND l.objid = :run_id AND l.objsubid = 2"""


def load_holder(engine, run_id: int):
    """(state, query) of the backend whose transaction is loading collection run ``run_id``; None when no
    load of it is open (not started yet, or committed or rolled back)."""
    with engine.connect() as conn:
        return conn.execute(text(LOAD_HOLDER), {"run_id": run_id}).one_or_none()


def paused_mid_load(engine, run_id: int) -> str | None:
    """With the loading process stopped: ``mid-load`` while its transaction stays open (nothing of it can
    commit any more), ``over`` if it ended first; None while a COMMIT it sent is still being applied."""
    holder = load_holder(engine, run_id)
    if holder is None:
        return "over"
    committing = holder.state == "active" and holder.query.lstrip().upper().startswith("COMMIT")
    return None if committing else "mid-load"


def assert_run_loaded_once(engine, run_id: int, delivered: int) -> None:
    with engine.connect() as conn:
        assert unbalanced_runs(conn, run_id) == (1, {})
        assert not any(key_conflicts(conn, run_id).values())
        loaded, rejected, duplicates = conn.execute(
            text(
                "SELECT (SELECT count(*) FROM raw_items WHERE collection_run_id = :r), "
                "(SELECT count(*) FROM rejected_items WHERE collection_run_id = :r), "
                "(SELECT count(*) FROM item_duplicates WHERE collection_run_id = :r)"
            ),
            {"r": run_id},
        ).one()
    assert loaded + rejected + duplicates == delivered and loaded > 0


def test_a_worker_killed_mid_step_loses_nothing_and_duplicates_nothing(
    celery_env, start_worker, engine, s3_store, tmp_path
):
    """The worker's pool process is killed inside the load's transaction, for certain: it is stopped
    (SIGSTOP) once the load holds its lock, seen still holding it, then killed (no fixed sleep, which
    killed it before, after or during the commit depending on the machine's speed). With late
    acknowledgement the lost step goes back to the queue and runs again to completion (on the other
    worker or the victim's new pool process); the rows are loaded once."""
    first = start_worker("first", ["ingest", "default"])
    second = start_worker("second", ["ingest", "default"])
    (requests,) = write_payloads(tmp_path, runs=1, items=20_000)
    run_id = collect(engine, s3_store, requests)
    home = celery_env["DAGSTER_HOME"]
    marker = "Executing steps raw_items in celery worker"

    cli = subprocess.Popen(["observatory", "ingest", "--run", str(run_id)], cwd=ROOT, env=celery_env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    wait_for(lambda: load_holder(engine, run_id), 600, "the load's transaction")
    worker_name = engine_events(home, marker)[0].dagster_event.event_specific_data.metadata["Celery worker"].value
    victim = first if worker_name.startswith("first@") else second
    pool = victim.pool_pids()
    for pid in pool:
        os.kill(pid, signal.SIGSTOP)
    assert wait_for(lambda: paused_mid_load(engine, run_id), 120, "the paused load's state") == "mid-load"
    for pid in pool:
        os.kill(pid, signal.SIGKILL)
    out, _ = cli.communicate(timeout=900)

    # Late acks: the lost step went back to the queue and ran again, to completion
    assert cli.returncode == 0, out + first.log() + second.log()
    assert len(engine_events(home, marker)) == 2, out
    assert_run_loaded_once(engine, run_id, delivered=20_000)
    rerun = observatory(celery_env, "ingest", "--run", str(run_id))
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert_run_loaded_once(engine, run_id, delivered=20_000)


def test_a_run_whose_broker_stops_fails_with_one_reason_and_succeeds_when_it_returns(
    celery_env, start_worker, engine, s3_store, tmp_path, redis_server
):
    (requests,) = write_payloads(tmp_path, runs=1, items=200)
    run_id = collect(engine, s3_store, requests)
    cli = subprocess.Popen(["observatory", "ingest", "--run", str(run_id)], cwd=ROOT, env=celery_env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    with redis.Redis.from_url(redis_server.url(0)) as broker:  # closed, not left to the collector
        queued = lambda: sum(broker.llen(key) for key in broker.keys("ingest*"))  # noqa: E731 (one list per priority)
        wait_for(queued, 300, "the step in the ingest queue")  # queued: no worker serves it
    redis_server.stop()
    out, err = cli.communicate(timeout=120)
    assert cli.returncode == 1
    assert out.count("\n") == 1 and "FAILED: redis.exceptions.ConnectionError" in out and "127.0.0.1" in out, out
    assert redis_server.password not in out + err and "Traceback" not in out + err

    redis_server.start()  # its append-only file kept the queued step: the worker runs it, and the rerun's
    start_worker("worker", ["ingest", "default"])
    rerun = observatory(celery_env, "ingest", "--run", str(run_id))
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert_run_loaded_once(engine, run_id, delivered=200)
