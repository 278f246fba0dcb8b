"""A takedown never stalls silently: a takedown run that dies before it records an attempt leaves the same
requests due, and the sensor's next tick asks for a new run (a new run key: the daemon drops a request
whose run key it already launched). On a real instance, with the runs' records and tags in it."""

from __future__ import annotations

from datetime import date

import dagster as dg

from observatory_assets.defs.publishing.jobs import takedown_job
from observatory_assets.defs.publishing.takedowns import list_takedowns, request_takedown
from resources import ObjectStoreResource, PostgresResource, PublishTarget
from sensors.publishing import MAX_RUNS_PER_DUE_STATE, takedown_sensor
from tests.support.digests import seed_event

#: A database nobody listens on (loopback, a port refused at once): the run dies before it touches a request.
UNREACHABLE_DATABASE = "postgresql+psycopg://observatory@127.0.0.1:9/observatory"


def _launch(instance: dg.DagsterInstance, request: dg.RunRequest, resources: dict) -> dg.ExecuteInProcessResult:
    """Run the job for ``request`` as the daemon would launch it: with its tags and run key."""
    return takedown_job.execute_in_process(
        resources=resources, instance=instance, tags={**request.tags, "dagster/run_key": request.run_key},
        raise_on_error=False,
    )  # fmt: skip


def test_a_takedown_run_that_dies_before_recording_an_attempt_is_retried_under_a_new_run_key(
    engine, database_url, objects_root
) -> None:
    _, (item,) = seed_event(engine, date(2031, 5, 5), "Doomed run", None, [("D", None, "s1")])
    request_id = request_takedown(engine, "item", str(item), "privacy", "editor")
    resources = {
        "postgres": PostgresResource(url=database_url),
        "object_store": ObjectStoreResource(local_root=str(objects_root)),
        "publish_target": PublishTarget(),
    }
    dying = {**resources, "postgres": PostgresResource(url=UNREACHABLE_DATABASE)}
    with dg.instance_for_test() as instance:

        def tick():
            with dg.build_sensor_context(instance=instance, resources=resources) as context:
                return takedown_sensor(context)

        first = tick()
        assert isinstance(first, dg.RunRequest)
        assert not _launch(instance, first, dying).success
        assert [(r["id"], r["status"], r["attempts"]) for r in list_takedowns(engine)] == [(request_id, "pending", 0)]

        retry = tick()
        assert isinstance(retry, dg.RunRequest) and retry.run_key != first.run_key
        assert not instance.get_run_records(dg.RunsFilter(tags={"dagster/run_key": retry.run_key}))
        assert _launch(instance, retry, resources).success
        assert [r["status"] for r in list_takedowns(engine)] == ["withdrawn"]
        assert isinstance(tick(), dg.SkipReason)


def test_a_due_state_whose_runs_keep_dying_is_left_to_a_person_with_a_reason(engine, database_url) -> None:
    _, (item,) = seed_event(engine, date(2031, 6, 6), "Always dying", None, [("A", None, "s1")])
    request_takedown(engine, "item", str(item), "privacy", "editor")
    resources = {"postgres": PostgresResource(url=database_url)}
    dying = {
        "postgres": PostgresResource(url=UNREACHABLE_DATABASE),
        "object_store": ObjectStoreResource(local_root="/nonexistent"),
        "publish_target": PublishTarget(),
    }
    with dg.instance_for_test() as instance:
        keys = []
        for _ in range(MAX_RUNS_PER_DUE_STATE):
            with dg.build_sensor_context(instance=instance, resources=resources) as context:
                request = takedown_sensor(context)
            keys.append(request.run_key)
            assert not _launch(instance, request, dying).success
        with dg.build_sensor_context(instance=instance, resources=resources) as context:
            stalled = takedown_sensor(context)
    assert len(set(keys)) == MAX_RUNS_PER_DUE_STATE
    assert isinstance(stalled, dg.SkipReason) and "ended without success" in stalled.skip_message
