"""A delivery run that dies never stalls delivery: a real ``dagster-daemon``'s webhook sensor starts a
delivery run, which POSTs a message to a receiver holding its answer; the code server that launched the
run, its run worker and the step's process are killed with ``kill -9`` (the OOM killer, a restarted
container), and with nobody stepping in run monitoring marks the run failed and the sensor starts the next
delivery run, which sends the message again with its ``webhook-id`` and records it delivered, once."""

from __future__ import annotations

import threading

import dagster as dg
import pytest
from cryptography.fernet import Fernet
from sqlalchemy import text
from standardwebhooks.webhooks import Webhook

from observatory_assets.defs.webhooks.jobs import deliver_webhooks
from observatory_assets.defs.webhooks.subscriptions import add_subscription
from observatory_assets.lib.feed_server import FeedServer, Reply
from observatory_assets.lib.outbox import EXPORT_COMPLETED, emit
from sensors.webhooks import webhook_delivery_sensor
from tests.support.daemon import kill_run_with_its_code_server, start_daemon, stop_daemon, wait_while_it_moves

#: Seconds a receiver holds its first answer at most (the test releases it once the run is killed).
HELD_AT_MOST_S = 300


def delivery_runs(instance: dg.DagsterInstance) -> list[dg.DagsterRun]:
    records = instance.get_run_records(dg.RunsFilter(job_name=deliver_webhooks.name))
    return [record.dagster_run for record in sorted(records, key=lambda record: record.create_timestamp)]


@pytest.mark.slow
def test_a_killed_delivery_run_is_failed_and_the_next_delivery_starts_by_itself(
    dagster_env, engine, tmp_path, monkeypatch
):
    key = Fernet.generate_key().decode()
    monkeypatch.setenv("OBSERVATORY_SECRET_KEY", key)
    env = {**dagster_env, "OBSERVATORY_SECRET_KEY": key, "OBSERVATORY_ALLOW_PRIVATE_NETWORKS": "1"}
    released = threading.Event()
    verified: list[str] = []
    log_path = tmp_path / "daemon.log"
    with FeedServer() as receiver:
        with engine.begin() as conn:
            _, secret = add_subscription(conn, receiver.url("/hook"), [EXPORT_COMPLETED], name="receiver")
            emit(conn, EXPORT_COMPLETED, {"export": 1})

        def hold_until_released(handler) -> Reply:
            headers = {name.lower(): value for name, value in handler.headers.items()}
            Webhook(secret).verify(handler.body, headers)
            verified.append(headers["webhook-id"])
            released.wait(HELD_AT_MOST_S)
            return Reply(200)

        receiver.routes["/hook"] = hold_until_released
        daemon = start_daemon(env, log_path)
        try:
            with pytest.MonkeyPatch.context() as patch:
                patch.setenv("DAGSTER_HOME", dagster_env["DAGSTER_HOME"])
                with dg.DagsterInstance.get() as instance:

                    def progress():
                        return [(run.run_id, run.status) for run in delivery_runs(instance)], list(verified)

                    wait_while_it_moves(lambda: verified, progress, daemon, log_path)
                    [killed] = delivery_runs(instance)
                    kill_run_with_its_code_server(instance, killed.run_id)
                    released.set()
                    runs = wait_while_it_moves(
                        lambda: (runs := delivery_runs(instance))[-1].status == dg.DagsterRunStatus.SUCCESS and runs,
                        progress,
                        daemon,
                        log_path,
                    )
        finally:
            released.set()
            stop_daemon(daemon)
    assert [run.status for run in runs] == [dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.SUCCESS]
    assert runs[0].run_id == killed.run_id
    assert runs[1].tags["dagster/sensor_name"] == webhook_delivery_sensor.name  # nobody stepped in
    with engine.connect() as conn:
        message_id, status, attempts = conn.execute(
            text("SELECT message_id, status, attempts FROM webhook_messages")
        ).one()
        outcomes = conn.execute(text("SELECT attempt, outcome FROM webhook_deliveries")).all()
    # sent twice with one webhook-id (at least once); the killed run's attempt was never recorded
    assert verified == [message_id, message_id]
    assert (status, attempts, [tuple(row) for row in outcomes]) == ("delivered", 1, [(1, "delivered")])
