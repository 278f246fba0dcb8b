"""A server the suite starts after an in-process Dagster run still stops on SIGTERM (see ``conftest``)."""

import signal
import subprocess
import sys

import dagster as dg


@dg.op
def nothing() -> None:
    """An op whose run only enters and leaves Dagster's interrupt handling."""


@dg.job
def a_run_in_process():
    nothing()


def test_a_child_started_after_an_in_process_run_stops_on_sigterm():
    assert a_run_in_process.execute_in_process().success
    assert signal.getsignal(signal.SIGTERM) is not signal.SIG_IGN
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        child.terminate()
        assert child.wait(timeout=60) == -signal.SIGTERM
    finally:
        child.kill()
        child.wait()
