"""A real ``dagster-daemon`` for a test: started on the test's instance (``dagster_env``) in its own process
group, and stopped with everything it started."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import ROOT


def start_daemon(env: dict[str, str], log_path: Path) -> subprocess.Popen:
    daemon = Path(sys.executable).parent / "dagster-daemon"
    with open(log_path, "wb") as log:
        return subprocess.Popen([str(daemon), "run", "-w", "workspace.yaml"], cwd=ROOT, env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip


def stop_daemon(daemon: subprocess.Popen) -> None:
    """Stop the daemon, then whatever is left of its process group (started for this test): its code
    servers outlive a SIGTERM while they wait for their runs' database, which the test is about to drop."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(daemon.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        daemon.wait(30)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(daemon.pid, signal.SIGKILL)
    daemon.wait(30)


#: Seconds with no progress after which a flow is taken for stuck: a guard against hanging, not a speed
#: target (a slower machine moves more slowly, and gets more time, as long as it moves).
STALLED_AFTER_SECONDS = 600
SENSOR_NAME_TAG, SCHEDULE_NAME_TAG, BACKFILL_TAG = "dagster/sensor_name", "dagster/schedule_name", "dagster/backfill"


def run_origin(instance, run) -> str:
    """Who started ``run``: ``sensor <name>``, ``schedule <name>``, ``backfill of sensor <name>`` (a run
    the backfill daemon launched for a backfill that sensor requested, tagged with the backfill only), or
    ``by hand``."""
    if SENSOR_NAME_TAG in run.tags:
        return f"sensor {run.tags[SENSOR_NAME_TAG]}"
    if SCHEDULE_NAME_TAG in run.tags:
        return f"schedule {run.tags[SCHEDULE_NAME_TAG]}"
    backfill = instance.get_backfill(run.tags[BACKFILL_TAG]) if BACKFILL_TAG in run.tags else None
    if backfill is not None and SENSOR_NAME_TAG in backfill.tags:
        return f"backfill of sensor {backfill.tags[SENSOR_NAME_TAG]}"
    return "by hand"


def wait_while_it_moves(done, progress, daemon: subprocess.Popen, log_path: Path, poll_seconds: float = 2.0):
    """Poll ``done()`` until it returns something truthy, and return that. Fail when the daemon exits, or
    when ``progress()`` (what changes as the flow moves: runs and their statuses, rows) has not changed for
    ``STALLED_AFTER_SECONDS``: the deadline comes from the flow's own progress, not from a fixed duration."""
    last, moved_at = None, time.monotonic()
    while not (found := done()):
        assert daemon.poll() is None, "the daemon exited:\n" + log_path.read_text()[-3000:]
        now = progress()
        if now != last:
            last, moved_at = now, time.monotonic()
        assert time.monotonic() - moved_at < STALLED_AFTER_SECONDS, f"stuck at {now}\n" + log_path.read_text()[-3000:]
        time.sleep(poll_seconds)
    return found
