"""A poll cycle told to stop (SIGTERM from an operator, a container runtime or Dagster cancelling its run, or
Ctrl-C) stops within moments, whatever its servers do.

While a cycle fetches, :func:`stop_on_signal` turns SIGTERM and SIGINT into a :class:`StopSignal` the
fetching loop watches: no fetch starts after it, the fetches in flight are abandoned (their threads are
daemons that end at their own deadline, their answers dropped), and the cycle gives every source back to
the next cycle (:func:`~.recovery.abandon_cycle_runs`) before it raises :class:`CycleStopped`. Outside the
main thread (a signal can only be caught there) the stop is never signalled.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

STOPPING_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class CycleStopped(Exception):
    """A cycle stopped by a signal before its answers were recorded: its sources are the next cycle's."""


class StopSignal:
    """Set when the cycle must stop (by :func:`stop_on_signal`); what stopped it, by name."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason: str | None = None

    def set(self, reason: str) -> None:
        self.reason = reason
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()


@contextmanager
def stop_on_signal() -> Iterator[StopSignal]:
    """A :class:`StopSignal` set by SIGTERM or SIGINT while the block runs (the handlers before it restored
    afterwards); in a thread other than the main one, a signal that is never set."""
    stop = StopSignal()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = {number: signal.getsignal(number) for number in STOPPING_SIGNALS}

    def handler(number: int, _frame) -> None:
        stop.set(signal.Signals(number).name)

    for number in STOPPING_SIGNALS:
        signal.signal(number, handler)
    try:
        yield stop
    finally:
        for number, previous_handler in previous.items():
            signal.signal(number, previous_handler)
