"""Producer/consumer streaming: iterate on a background thread through a bounded queue."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

_DONE = object()


def in_background(items: Iterable[T], ahead: int, name: str) -> Iterator[T]:
    """The items of ``items``, produced on a background thread at most ``ahead`` items ahead of the
    consumer, so producing (parsing, reading a COPY) overlaps with consuming in constant memory.

    An exception in the producer is raised in the consumer. Closing the returned generator early
    stops the producer and closes ``items`` on its thread (leaving a COPY block cancels the COPY).
    """
    handoff: queue.Queue = queue.Queue(maxsize=ahead)
    stop = threading.Event()

    def put(entry) -> bool:
        while not stop.is_set():
            try:
                handoff.put(entry, timeout=0.1)
                return True
            except queue.Full:
                pass
        return False

    def produce() -> None:
        iterator = iter(items)
        try:
            for item in iterator:
                if not put(item):
                    return
            put(_DONE)
        except BaseException as error:  # handed to the consumer, which raises it
            put(error)
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()

    producer = threading.Thread(target=produce, name=name, daemon=True)
    producer.start()
    try:
        while (item := handoff.get()) is not _DONE:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        producer.join()
