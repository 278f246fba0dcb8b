"""The instance's run launcher: Dagster's ``DefaultRunLauncher`` with a run-worker health check.

``DefaultRunLauncher`` starts each run as a process of the code server that loaded its job, and offers
run monitoring no way to ask whether that process still lives: a run whose worker was killed together with
its code server (``kill -9``, the OOM killer, a restarted container) stays STARTED for ever, and every
sensor that waits for it waits for ever. Here the daemon's run monitoring asks the code server recorded on
the run (the address the launcher tags it with) whether it still runs that run; a code server that is gone
or no longer runs it means a dead worker, and run monitoring marks the run failed.
"""

from __future__ import annotations

from dagster import DagsterRun, DefaultRunLauncher
from dagster._core.launcher.base import CheckRunHealthResult, WorkerStatus
from dagster._grpc.types import CanCancelExecutionRequest, CanCancelExecutionResult
from dagster._serdes import deserialize_value

#: Seconds a health check waits for the code server's answer.
HEALTH_CHECK_TIMEOUT_S = 30


class MonitoredRunLauncher(DefaultRunLauncher):
    """``DefaultRunLauncher`` (runs as code-server processes) whose workers run monitoring can check."""

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        """RUNNING while the code server that launched ``run`` still runs its process; FAILED when that
        code server is gone or no longer knows the run (its process died)."""
        client = self._get_grpc_client_for_termination(run.run_id)
        if client is None:  # run in the process that created it (``execute_in_process``): not ours to judge
            return CheckRunHealthResult(WorkerStatus.RUNNING, "not launched through a code server")
        try:
            answer = client.can_cancel_execution(
                CanCancelExecutionRequest(run_id=run.run_id), timeout=HEALTH_CHECK_TIMEOUT_S
            )
        except Exception as error:  # its code server is gone, and the processes it ran with it
            return CheckRunHealthResult(
                WorkerStatus.FAILED, f"its code server does not answer ({type(error).__name__})"
            )
        if deserialize_value(answer, CanCancelExecutionResult).can_cancel:
            return CheckRunHealthResult(WorkerStatus.RUNNING)
        return CheckRunHealthResult(WorkerStatus.FAILED, "its code server no longer runs it (the process died)")
