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

import dagster as dg

from tests.conftest import ROOT


def start_daemon(env: dict[str, str], log_path: Path) -> subprocess.Popen:
    daemon = Path(sys.executable).parent / "dagster-daemon"
    with open(log_path, "wb") as log:
        return subprocess.Popen([str(daemon), "run", "-w", "workspace.yaml"], cwd=ROOT, env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip


def worker_pid(instance: dg.DagsterInstance, run_id: str) -> int | None:
    """The run worker's pid, from the engine event its code server wrote when it started it."""
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
        pid = entry.dagster_event.engine_event_data.metadata.get("pid")
        if pid is not None:
            return int(pid.value)
    return None


def parent_pid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def process_tree(root: int) -> list[int]:
    """``root`` and every process below it (the run worker, the step process it runs the op in), parents first."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            children.setdefault(parent_pid(int(stat.parent.name)), []).append(int(stat.parent.name))
    tree, frontier = [], [root]
    while frontier:
        pid = frontier.pop(0)
        tree.append(pid)
        frontier += children.get(pid, [])
    return tree


def kill_run_with_its_code_server(instance: dg.DagsterInstance, run_id: str) -> None:
    """``kill -9`` the code server that launched the run, its run worker and the worker's step process (the
    OOM killer, a restarted container), the code server first (it would report its worker's end)."""
    pid = worker_pid(instance, run_id)
    assert pid is not None, f"run {run_id} has no run worker"
    for victim in process_tree(parent_pid(pid)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim, signal.SIGKILL)


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
