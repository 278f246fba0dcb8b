"""Short-lived processes forked from a server that imported the project once (multiprocessing's forkserver):
a test that starts and kills a process twenty times pays the interpreter's and Dagster's start-up once, not
twenty times. Each is still a process of its own, as one started from a shell: its own connections (to
Postgres, to the servers it calls), killed alone by ``kill -9``, with the test's environment as it was when
the process started."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable

#: What the server imports before it forks anything: the modules the chaos tests run in their processes.
PRELOADED = [
    "tests.support.helpers",
    "observatory_assets.defs.webhooks.delivery",
    "observatory_assets.defs.collection.polling",
    "resources.object_store",
    "resources.outbound",
    "resources.postgres",
]
_CONTEXT = multiprocessing.get_context("forkserver")
_CONTEXT.set_forkserver_preload(PRELOADED)


class Forked:
    """``target(*args)`` in a process forked from the server; ``with`` it, and it is dead and reaped after.
    ``target`` must be importable by name (a module-level function)."""

    def __init__(self, target: Callable[..., object], *args: object):
        self._started, started = _CONTEXT.Pipe(duplex=False)
        self.process = _CONTEXT.Process(target=_run, args=(dict(os.environ), started, target, args), daemon=True)
        self.process.start()
        started.close()

    @property
    def pid(self) -> int:
        return self.process.pid

    def started(self, timeout: float) -> bool:
        """True once the process runs the test's code (its environment in place), within ``timeout`` seconds."""
        return self._started.poll(timeout) and self._started.recv() == "started"

    def poll(self) -> int | None:
        """The exit code, or None while it runs (as ``Popen.poll``)."""
        return self.process.exitcode

    def wait(self) -> int:
        self.process.join()
        return self.process.exitcode

    def __enter__(self) -> Forked:
        return self

    def __exit__(self, *_exc) -> None:
        if self.process.exitcode is None:
            self.process.kill()
        self.process.join()
        self.process.close()
        self._started.close()


def _run(environment: dict[str, str], started, target: Callable[..., object], args: tuple) -> None:
    os.environ.clear()
    os.environ.update(environment)
    started.send("started")
    started.close()
    target(*args)
