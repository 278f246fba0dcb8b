"""A polling run that dies never stalls polling: a real ``dagster-daemon`` starts a polling run, the code
server that launched it, its run worker and the step's process are killed with ``kill -9`` (the OOM killer,
a restarted container), and with nobody stepping in run monitoring marks the run failed, the polling sensor recovers
its collection run (its source goes back to the next cycle, its hold is released) and starts the next
cycle, which fetches the source and charges it once."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path

import dagster as dg
import pytest
import yaml
from sqlalchemy import text

from observatory_assets.defs.collection.catalog import load_catalog, sync_catalog
from observatory_assets.defs.collection.jobs import poll_sources_job
from observatory_assets.defs.credits import ledger
from observatory_assets.lib.feed_server import Document, FeedServer, Reply
from resources.postgres import engine_for
from sensors.automation import automation_sensor
from sensors.collection_runs import collection_run_sensor
from tests.support.daemon import kill_run_with_its_code_server, start_daemon, stop_daemon
from tests.support.helpers import write

FEED = (
    b'<?xml version="1.0"?><rss version="2.0"><channel><title>T</title>'
    b"<item><guid>w-1</guid><title>Folketinget</title><pubDate>Wed, 02 Dec 2026 10:00:00 GMT</pubDate></item>"
    b"</channel></rss>"
)
#: Seconds after which polling is taken for stalled (a guard against hanging, not a speed target).
STUCK_AFTER_SECONDS = 900


def only_polling_runs_start(home: Path) -> None:
    """The embedded instance's dagster.yaml, with the runs that ingestion and automation would request after
    a poll kept queued (limit 0): the cores go to the runs under test."""
    config_path = home / "dagster.yaml"
    config = yaml.safe_load(config_path.read_text())
    config["concurrency"]["runs"]["tag_concurrency_limits"] = [
        {"key": "dagster/sensor_name", "value": sensor.name, "limit": 0}
        for sensor in (collection_run_sensor, automation_sensor)
    ]
    config_path.write_text(yaml.safe_dump(config))


def poll_runs(instance: dg.DagsterInstance) -> list[dg.DagsterRun]:
    return sorted(
        (r.dagster_run for r in instance.get_run_records(dg.RunsFilter(job_name=poll_sources_job.name))),
        key=lambda run: run.tags.get("dagster/run_key", ""),
    )


def wait_for(condition, what: str, daemon: subprocess.Popen, log_path: Path):
    deadline = time.monotonic() + STUCK_AFTER_SECONDS
    while not (found := condition()):
        assert daemon.poll() is None, "the daemon exited:\n" + log_path.read_text()[-3000:]
        assert time.monotonic() < deadline, f"stuck waiting for {what}\n" + log_path.read_text()[-3000:]
        time.sleep(1)
    return found


@pytest.mark.slow
def test_a_killed_polling_run_is_failed_and_the_next_cycle_starts_by_itself(dagster_env, database_url, tmp_path):
    released = threading.Event()

    def stall_until_released(_):
        released.wait(120)
        return Reply(200, body=FEED)

    engine = engine_for(database_url)
    only_polling_runs_start(Path(dagster_env["DAGSTER_HOME"]))
    env = {**dagster_env, "OBSERVATORY_ALLOW_PRIVATE_NETWORKS": "1"}
    log_path = tmp_path / "daemon.log"
    with FeedServer() as server:
        server.routes["/feed"] = stall_until_released
        catalog = write(tmp_path / "sources" / "catalog.yaml", json.dumps({
            "sources": [{"name": "wire", "url": server.url("/feed"), "format": "rss", "cost": {"per_request": 2}}],
            "designs": [{"name": "watch", "sources": ["wire"], "budget": {"credits": 10}}],
        }))  # fmt: skip
        with engine.begin() as conn:
            sync_catalog(conn, load_catalog(catalog.parent))
        daemon = start_daemon(env, log_path)
        try:
            with pytest.MonkeyPatch.context() as patch:
                patch.setenv("DAGSTER_HOME", dagster_env["DAGSTER_HOME"])
                with dg.DagsterInstance.get() as instance:
                    wait_for(lambda: server.requests, "the first cycle's request", daemon, log_path)
                    [first] = poll_runs(instance)
                    kill_run_with_its_code_server(instance, first.run_id)
                    server.routes.pop("/feed")
                    server.documents["/feed"] = Document(FEED)
                    released.set()
                    wait_for(
                        lambda: (
                            (runs := poll_runs(instance))[-1].status == dg.DagsterRunStatus.SUCCESS and len(runs) >= 2
                        ),
                        "the next polling run to succeed",
                        daemon,
                        log_path,
                    )
                    runs = poll_runs(instance)
        finally:
            stop_daemon(daemon)
    assert runs[0].run_id == first.run_id and runs[0].status == dg.DagsterRunStatus.FAILURE
    with engine.connect() as conn:
        collection_runs = conn.execute(text("SELECT id, status FROM collection_runs ORDER BY id")).all()
        assert [status for _, status in collection_runs] == ["failed", "completed"]
        killed, next_cycle = (run_id for run_id, _ in collection_runs)
        kinds = conn.execute(text("SELECT collection_run_id, kind, amount FROM credit_transactions ORDER BY id")).all()
        # the killed cycle's hold was given back whole; the next cycle holds its request's cost
        assert [(run, kind, float(amount)) for run, kind, amount in kinds] == [
            (killed, "reserve", 2.0), (killed, "release", 2.0), (next_cycle, "reserve", 2.0)
        ]  # fmt: skip
        assert ledger.balance(conn, "watch").available == 8
