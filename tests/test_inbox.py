"""The inbox on the local store and on the real S3 server (SeaweedFS): a dropped file becomes a
collection run and moves to inbox/processed/<date>/; an unknown format or a file outside a source
folder becomes a failed run with its reason; a crash mid-move neither loses the file nor makes a
second run; the sensor requests each drop once (its cursor: key and ETag)."""

from __future__ import annotations

import contextlib
import json
import re
import uuid
from datetime import date

import dagster as dg
import pytest
from sqlalchemy import text

from observatory_assets.defs.ingestion.inbox import take_inbox_object, waiting_objects
from observatory_assets.defs.ingestion.jobs import inbox_job
from observatory_assets.defs.ingestion.loading import ingest_collection_run
from observatory_assets.lib.dagster import collection_run_partitions
from resources import ObjectStoreResource
from resources.object_store import put_bytes, read_hashed
from sensors.inbox import inbox_sensor

DAY = date(2026, 12, 6)
FEED = "".join(
    json.dumps({"id": str(n), "title": f"Folketinget {n}", "published_at": "2026-11-01T10:00:00Z"}) + "\n"
    for n in range(3)
).encode()
CSV = b"id,title,published_at\n1,Regeringen,2026-11-02T08:00:00Z\n"


@pytest.fixture(params=["local", "s3"])
def inbox_store(request, objects_root):
    """The local store, or a fresh bucket on the real S3 server."""
    if request.param == "local":
        return ObjectStoreResource(local_root=str(objects_root))
    server = request.getfixturevalue("s3_server")
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:30].strip("-")
    return ObjectStoreResource(endpoint=server.endpoint, bucket=f"inbox-{slug}-{uuid.uuid4().hex[:8]}",
                               access_key=server.access_key, secret_key=server.secret_key)  # fmt: skip


def _runs(engine) -> list:
    with engine.connect() as conn:
        return conn.execute(text("SELECT id, status, error, payloads FROM collection_runs ORDER BY id")).all()


def test_drops_become_runs_and_move_to_processed(engine, inbox_store):
    store = inbox_store.get_store()
    put_bytes(store, "inbox/dr-nyheder/morning.jsonl", FEED)
    put_bytes(store, "inbox/tv2/poll.csv", CSV)
    put_bytes(store, "inbox/tv2/report.pdf", b"%PDF-1.7 not a feed")
    put_bytes(store, "inbox/loose.jsonl", FEED)
    put_bytes(store, "elsewhere/untouched.jsonl", FEED)

    drops = list(waiting_objects(store))
    assert [d.key for d in drops] == [
        "inbox/dr-nyheder/morning.jsonl", "inbox/loose.jsonl", "inbox/tv2/poll.csv", "inbox/tv2/report.pdf",
    ]  # fmt: skip
    outcomes = {d.key: take_inbox_object(engine, store, d.key, d.etag, DAY) for d in drops}

    morning = outcomes["inbox/dr-nyheder/morning.jsonl"]
    assert morning.status == "completed" and morning.error is None
    assert morning.processed_key.startswith("inbox/processed/2026-12-06/dr-nyheder/")
    assert morning.processed_key.endswith("-morning.jsonl")
    assert outcomes["inbox/tv2/poll.csv"].status == "completed"
    assert outcomes["inbox/tv2/report.pdf"].status == "failed"
    assert outcomes["inbox/tv2/report.pdf"].error.startswith("inbox_unknown_format: .pdf")
    assert outcomes["inbox/loose.jsonl"].error.startswith("inbox_no_source")

    # nothing is left in the inbox, nothing is lost: every drop is kept byte for byte under processed/
    assert list(waiting_objects(store)) == []
    assert store.size("elsewhere/untouched.jsonl") == len(FEED)
    for original, outcome in outcomes.items():
        expected = CSV if original.endswith(".csv") else b"%PDF-1.7 not a feed" if original.endswith(".pdf") else FEED
        assert read_hashed(store, outcome.processed_key)[0] == len(expected)

    runs = {run.id: run for run in _runs(engine)}
    assert len(runs) == 4
    failed = runs[outcomes["inbox/tv2/report.pdf"].collection_run_id]
    assert failed.status == "failed" and "inbox_unknown_format" in failed.error
    assert failed.payloads[0]["object_key"] == outcomes["inbox/tv2/report.pdf"].processed_key
    loaded = ingest_collection_run(engine, store, morning.collection_run_id)
    assert (loaded.delivered, loaded.loaded) == (3, 3) and loaded.by_source == {
        "dr-nyheder": {"loaded": 3, "duplicates": 0, "rejected": 0}
    }

    # the same drop taken again (a retried job) changes nothing
    again = take_inbox_object(engine, store, "inbox/dr-nyheder/morning.jsonl", drops[0].etag, DAY)
    assert again == morning and len(_runs(engine)) == 4


class CrashBeforeDelete:
    """The real store, but the process dies right after the verified copy, before the original is deleted."""

    def __init__(self, store):
        self._store = store

    def __getattr__(self, name):
        return getattr(self._store, name)

    def delete(self, key):
        raise SystemExit("killed between copy and delete")


def test_a_crash_mid_move_loses_nothing_and_makes_one_run(engine, inbox_store):
    store = inbox_store.get_store()
    put_bytes(store, "inbox/dr/late.jsonl", FEED)
    (drop,) = waiting_objects(store)
    with pytest.raises(SystemExit):
        take_inbox_object(engine, CrashBeforeDelete(store), drop.key, drop.etag, DAY)
    assert store.size(drop.key) == len(FEED)  # the original is still there
    (pending,) = _runs(engine)
    assert pending.status == "pending"

    outcome = take_inbox_object(engine, store, drop.key, drop.etag, DAY)
    assert outcome.collection_run_id == pending.id and outcome.status == "completed"
    assert store.size(drop.key) is None and len(_runs(engine)) == 1


def _tick(
    store_resource: ObjectStoreResource, cursor: str | None, instance: dg.DagsterInstance | None = None
) -> dg.SensorResult:
    with contextlib.ExitStack() as stack:
        instance = instance or stack.enter_context(dg.DagsterInstance.ephemeral())
        context = stack.enter_context(
            dg.build_sensor_context(cursor=cursor, resources={"object_store": store_resource}, instance=instance)
        )
        return inbox_sensor(context)


def test_the_sensor_requests_each_drop_once(engine, inbox_store):
    store = inbox_store.get_store()
    first = _tick(inbox_store, None)
    assert first.run_requests == [] and "no new objects" in first.skip_reason.skip_message

    put_bytes(store, "inbox/dr/a.jsonl", FEED)
    put_bytes(store, "inbox/dr/processed-looking-name.csv", CSV)
    second = _tick(inbox_store, first.cursor)
    requested = {r.run_config["ops"]["take_inbox_drop"]["config"]["key"]: r for r in second.run_requests}
    assert set(requested) == {"inbox/dr/a.jsonl", "inbox/dr/processed-looking-name.csv"}
    etag = requested["inbox/dr/a.jsonl"].run_config["ops"]["take_inbox_drop"]["config"]["etag"]
    assert requested["inbox/dr/a.jsonl"].run_key == f"inbox/dr/a.jsonl#{etag}"
    assert json.loads(second.cursor)["inbox/dr/a.jsonl"] == etag

    third = _tick(inbox_store, second.cursor)  # the jobs have not run yet: nothing is requested twice
    assert third.run_requests == []

    take_inbox_object(engine, store, "inbox/dr/a.jsonl", etag, DAY)
    put_bytes(store, "inbox/dr/a.jsonl", CSV + CSV)  # a new file dropped under the same name
    fourth = _tick(inbox_store, third.cursor)
    (again,) = fourth.run_requests
    assert again.run_config["ops"]["take_inbox_drop"]["config"]["etag"] != etag


def test_the_inbox_job_takes_a_drop_and_registers_its_partition(engine, resources, store):
    put_bytes(store, "inbox/dr/noon.jsonl", FEED)
    (drop,) = waiting_objects(store)
    with dg.DagsterInstance.ephemeral() as instance:
        result = inbox_job.execute_in_process(
            run_config={"ops": {"take_inbox_drop": {"config": {"key": drop.key, "etag": drop.etag}}}},
            resources=resources,
            instance=instance,
        )
        run_id = result.output_for_node("take_inbox_drop")
        assert instance.has_dynamic_partition(collection_run_partitions.name, str(run_id))
    (run,) = _runs(engine)
    assert (run.id, run.status) == (run_id, "completed") and list(waiting_objects(store)) == []


def test_a_drop_whose_job_failed_for_good_is_requested_again(store, objects_root):
    resource = ObjectStoreResource(local_root=str(objects_root))
    put_bytes(store, "inbox/dr/a.jsonl", FEED)
    with dg.DagsterInstance.ephemeral() as instance:
        (request,) = (first := _tick(resource, None, instance)).run_requests
        cursor = first.cursor
        for attempt in range(1, 5):
            run = instance.create_run_for_job(inbox_job, run_config=request.run_config, tags=request.tags, run_id=None)
            assert _tick(resource, cursor, instance).run_requests == []  # queued: not requested twice
            instance.report_run_failed(run)
            retried = _tick(resource, cursor, instance).run_requests
            if attempt <= 3:
                (request,) = retried
                assert request.run_key.endswith(f"#try-{attempt}")
            else:
                assert retried == []  # left to a person; the file is still in the inbox
    assert store.size("inbox/dr/a.jsonl") == len(FEED)
