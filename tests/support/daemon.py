"""A real ``dagster-daemon`` for a test: started on the test's instance (``dagster_env``) in its own process
group, and stopped with everything it started."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
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
