"""Takedowns against the static site and a real Ghost: stage 1 withdraws the item everywhere, stage 2
deletes what only it carried, a cancel restores and deletes nothing, the deadline lives in the database,
and a target failure leaves a retryable request and a failed Dagster run."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
import uuid
from datetime import UTC, date, datetime, timedelta

import dagster as dg
import pytest
from sqlalchemy import text

from observatory_assets.defs.exports.delivery import export_content
from observatory_assets.defs.exports.filters import build_filters
from observatory_assets.defs.publishing.ghost import GhostClient
from observatory_assets.defs.publishing.jobs import takedown_job
from observatory_assets.defs.publishing.publisher import publish_day
from observatory_assets.defs.publishing.site import ATOM_FEED_KEY, INDEX_KEY, JSON_FEED_KEY, StaticTarget, page_key
from observatory_assets.defs.publishing.takedowns import (
    cancel_takedown,
    due_takedowns,
    list_takedowns,
    process_takedowns,
    request_takedown,
)
from observatory_assets.defs.publishing.targets import GhostTarget, record_tag
from resources import ObjectStoreResource, PostgresResource, PublishTarget
from resources.object_store import LocalObjectStore
from sensors.publishing import takedown_sensor
from tests.support.digests import seed_event

LATER = timedelta(hours=100)


@pytest.fixture
def day() -> date:
    return date(2031, 1, 1) + timedelta(days=uuid.uuid4().int % 20000)


@pytest.fixture
def targets(store, ghost_server):
    with GhostClient(ghost_server.url, ghost_server.admin_key) as client:
        yield {"static": StaticTarget(store), "ghost": GhostTarget(client)}


def read(store, key: str) -> str:
    with store.open(key) as stream:
        return stream.read().decode()


def publish_both(engine, store, targets, day) -> dict:
    return {kind: publish_day(engine, store, t, day, actor="test") for kind, t in targets.items()}


def site_texts(store, day) -> str:
    page = read(store, page_key(day)) if store.size(page_key(day)) is not None else ""
    return page + read(store, INDEX_KEY) + read(store, JSON_FEED_KEY) + read(store, ATOM_FEED_KEY)


def ghost_html(targets, external_id) -> str | None:
    post = targets["ghost"].client.get_post(external_id, formats="html")
    return None if post is None else post.html


def test_stage1_withdraws_the_item_from_ghost_the_site_the_feeds_and_a_new_export(engine, store, targets, day) -> None:
    seed_event(engine, day, "Harbour reopens", "Ships sail again.", [("Harbour", "https://a.example/h", "s1"),
                                                                      ("Harbour too", "https://b.example/h", "s2")])  # fmt: skip
    _, (secret_item,) = seed_event(
        engine, day, "Leaked memo story", "The memo says.", [("Memo", "https://m.example/", "s3")]
    )
    published = publish_both(engine, store, targets, day)
    assert "Leaked memo story" in site_texts(store, day) and "Leaked memo story" in ghost_html(
        targets, published["ghost"].external_id
    )

    request_id = request_takedown(engine, "item", str(secret_item), "privacy", "editor")
    run = process_takedowns(engine, store, targets, actor="test")
    assert run.withdrawn == [request_id] and not run.failures

    assert "Leaked memo story" not in site_texts(store, day) and "Harbour reopens" in site_texts(store, day)
    post = targets["ghost"].client.get_post(published["ghost"].external_id, formats="html")
    assert post.status == "published" and "Leaked memo story" not in post.html and "Harbour reopens" in post.html
    exported = export_content(engine, store, build_filters(), ["ndjson"], actor="test")[0]
    rows = [json.loads(line) for line in read(store, exported.object_key).splitlines()]
    assert exported.record_count == 2 and "Memo" not in {r["title"] for r in rows}
    with engine.connect() as conn:
        assert set(conn.execute(text("SELECT status FROM publish_records")).scalars()) == {"takedown_pending"}
        assert conn.execute(text("SELECT status FROM takedown_requests")).scalar_one() == "withdrawn"
        actions = (
            conn.execute(text("SELECT action FROM audit_log WHERE object_type = 'takedown_request' ORDER BY id"))
            .scalars()
            .all()
        )
    assert actions == ["takedown_request", "takedown_stage1"]

    # stage 2 keeps records that still have content, and makes them active again
    run = process_takedowns(engine, store, targets, actor="test", now=datetime.now(UTC) + LATER)
    assert run.removed == [request_id]
    assert ghost_html(targets, published["ghost"].external_id) is not None
    with engine.connect() as conn:
        assert set(conn.execute(text("SELECT status FROM publish_records")).scalars()) == {"active"}


def test_stage2_deletes_what_only_the_item_carried_and_it_never_comes_back(engine, store, targets, day) -> None:
    _, (item,) = seed_event(engine, day, "Only story", "Alone.", [("Only", "https://o.example/", "s1")])
    published = publish_both(engine, store, targets, day)
    request_id = request_takedown(engine, "url", "https://o.example/", "court order", "legal")

    process_takedowns(engine, store, targets, actor="test")  # stage 1: nothing left to show
    post = targets["ghost"].client.get_post(published["ghost"].external_id, formats="html")
    assert post.status == "draft" and "Only story" not in post.html
    assert store.size(page_key(day)) is None and "Only story" not in site_texts(store, day)

    assert process_takedowns(engine, store, targets, actor="test").removed == []  # before the deadline: nothing
    run = process_takedowns(engine, store, targets, actor="test", now=datetime.now(UTC) + LATER)
    assert run.removed == [request_id] and not run.failures
    assert targets["ghost"].client.get_post(published["ghost"].external_id) is None
    assert targets["ghost"].client.find_posts(record_tag(day)) == []
    with engine.connect() as conn:
        records = conn.execute(text("SELECT id, status, live FROM publish_records ORDER BY id")).all()
    assert [(r.status, r.live) for r in records] == [("removed", False), ("removed", False)]

    # a later publish of that day is a recorded skip, and a new day's feed id is a new one
    assert {k: publish_day(engine, store, t, day, actor="test").action for k, t in targets.items()} == {
        "static": "removed", "ghost": "removed"}  # fmt: skip
    other_day = day + timedelta(days=1)
    seed_event(engine, other_day, "Next day", None, [("Next", None, "s1")])
    fresh = publish_day(engine, store, targets["static"], other_day, actor="test")
    feed = json.loads(read(store, JSON_FEED_KEY))
    assert [i["id"] for i in feed["items"]] == [f"urn:observatory:digest:{fresh.record_id}"]
    assert fresh.record_id not in {r.id for r in records}
    assert "Only story" not in site_texts(store, other_day)


def test_a_cancel_before_the_deadline_restores_everything_and_deletes_nothing(engine, store, targets, day) -> None:
    _, (item,) = seed_event(engine, day, "Disputed story", "Contested.", [("Disputed", "https://d.example/", "s1")])
    published = publish_both(engine, store, targets, day)
    request_id = request_takedown(engine, "item", str(item), "complaint", "reader")
    process_takedowns(engine, store, targets, actor="test")
    assert targets["ghost"].client.get_post(published["ghost"].external_id).status == "draft"

    cancel_takedown(engine, request_id, "editor")
    run = process_takedowns(engine, store, targets, actor="test")
    assert run.restored == [request_id]
    post = targets["ghost"].client.get_post(published["ghost"].external_id, formats="html")
    assert post.status == "published" and "Disputed story" in post.html
    assert "Disputed story" in site_texts(store, day)

    late = process_takedowns(engine, store, targets, actor="test", now=datetime.now(UTC) + LATER)
    assert late.removed == [] and late.restored == []
    assert targets["ghost"].client.get_post(published["ghost"].external_id) is not None
    assert store.size(page_key(day)) is not None
    with engine.connect() as conn:
        assert set(conn.execute(text("SELECT status FROM publish_records")).scalars()) == {"active"}
    with pytest.raises(ValueError, match="cancelled"):
        cancel_takedown(engine, request_id, "editor")


def test_the_deadline_is_in_the_database_so_a_restarted_sweeper_still_deletes(
    engine, store, database_url, objects_root, day
) -> None:
    _, (item,) = seed_event(engine, day, "Short-lived", None, [("Short", None, "s1")])
    publish_day(engine, store, StaticTarget(store), day, actor="test")
    request_takedown(engine, "item", str(item), "privacy", "editor", grace=timedelta(seconds=12))
    resources = {
        "postgres": PostgresResource(url=database_url),
        "object_store": ObjectStoreResource(local_root=str(objects_root)),
        "publish_target": PublishTarget(),
    }
    with contextlib.ExitStack() as instances:  # every instance closed at the end
        instance = instances.enter_context(dg.DagsterInstance.ephemeral())

        def sensor_tick():  # a fresh context each time: nothing survives between ticks but the database
            with dg.build_sensor_context(instance=instance, resources=resources) as context:
                return takedown_sensor(context)

        first = sensor_tick()
        assert isinstance(first, dg.RunRequest)
        assert takedown_job.execute_in_process(resources=resources, instance=instance).success
        assert isinstance(sensor_tick(), dg.SkipReason)  # withdrawn, deadline not passed
        deadline = datetime.fromisoformat(list_takedowns(engine)[0]["grace_until"])
        time.sleep(max(0.0, (deadline - datetime.now(UTC)).total_seconds()) + 0.5)
        instance = instances.enter_context(dg.DagsterInstance.ephemeral())  # "restart": no memory of the first
        due = sensor_tick()
        assert isinstance(due, dg.RunRequest) and due.run_key != first.run_key
        assert takedown_job.execute_in_process(resources=resources, instance=instance).success
        assert [r["status"] for r in list_takedowns(engine)] == ["removed"]
        assert isinstance(sensor_tick(), dg.SkipReason)


def test_a_target_failure_leaves_a_retryable_request_and_a_failed_run(
    engine, store, targets, ghost_server, database_url, objects_root, day
) -> None:
    _, (item,) = seed_event(engine, day, "Unreachable", None, [("U", None, "s1")])
    published = publish_both(engine, store, targets, day)
    request_id = request_takedown(engine, "item", str(item), "privacy", "editor")
    resources = {
        "postgres": PostgresResource(url=database_url),
        "object_store": ObjectStoreResource(local_root=str(objects_root)),
        "publish_target": PublishTarget(ghost_url="http://127.0.0.1:9", ghost_admin_key=ghost_server.admin_key),
    }
    result = takedown_job.execute_in_process(resources=resources, raise_on_error=False)
    assert not result.success
    (request,) = list_takedowns(engine)
    assert request["status"] == "pending" and request["attempts"] == 1 and "ConnectError" in request["last_error"]
    assert ghost_server.admin_key.split(":")[1] not in request["last_error"]
    assert due_takedowns(engine) == []  # backing off
    assert due_takedowns(engine, now=datetime.now(UTC) + timedelta(minutes=1)) == [(request_id, "pending", 1)]
    with engine.connect() as conn:
        assert (
            conn.execute(text("SELECT outcome FROM audit_log WHERE action = 'takedown_pending'")).scalar_one()
            == "failed"
        )

    run = process_takedowns(engine, store, targets, actor="test", force=True)  # Ghost reachable again
    assert run.withdrawn == [request_id] and not run.failures
    assert targets["ghost"].client.get_post(published["ghost"].external_id).status == "draft"


def test_the_takedown_cli_requests_lists_runs_and_cancels(dagster_env, engine, objects_root) -> None:
    day = date(2024, 3, 3)
    _, (item,) = seed_event(engine, day, "CLI story", None, [("C", "https://c.example/", "s1")])
    publish_day(engine, LocalObjectStore(objects_root), StaticTarget(LocalObjectStore(objects_root)), day, actor="test")
    cli = [sys.executable, "-m", "observatory_assets.cli"]

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*cli, *args], env=dagster_env, capture_output=True, text=True, timeout=300)

    done = run("takedown", "request", "--item", str(item), "--reason", "privacy", "--requested-by", "editor")
    assert done.returncode == 0 and "pending" in done.stdout, done.stderr
    missing = run("takedown", "request", "--item", "999999", "--reason", "x", "--requested-by", "y")
    assert missing.returncode != 0 and "no item matches" in missing.stderr and "Traceback" not in missing.stderr
    assert run("takedown", "run").returncode == 0  # a new process sweeps what the database says is due
    listed = json.loads(run("takedown", "list", "--json").stdout)
    assert [(r["status"], r["records"]) for r in listed] == [("withdrawn", 1)]
    assert not (objects_root / "site" / "digests" / f"{day}.html").exists()
    assert run("takedown", "cancel", str(listed[0]["id"]), "--by", "editor").returncode == 0
    with engine.connect() as conn:
        actions = conn.execute(text("SELECT action FROM audit_log ORDER BY id")).scalars().all()
    assert actions == ["publish", "takedown_request", "update", "takedown_stage1", "takedown_cancel"]


def test_the_sensor_waits_while_a_takedown_run_is_in_progress(engine, database_url, day) -> None:
    _, (item,) = seed_event(engine, day, "Busy", None, [("B", None, "s1")])
    request_takedown(engine, "item", str(item), "privacy", "editor")
    resources = {"postgres": PostgresResource(url=database_url)}
    with dg.DagsterInstance.ephemeral() as instance:
        running = instance.create_run_for_job(takedown_job, status=dg.DagsterRunStatus.STARTED)
        with dg.build_sensor_context(instance=instance, resources=resources) as context:
            assert "still in progress" in takedown_sensor(context).skip_message
        instance.report_run_failed(running)
        with dg.build_sensor_context(instance=instance, resources=resources) as context:
            assert isinstance(takedown_sensor(context), dg.RunRequest)
