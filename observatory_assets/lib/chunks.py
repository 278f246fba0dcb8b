"""Chunked, pipelined processing of query results: Python work of one chunk overlaps the SQL of another."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from threading import Lock

from sqlalchemy import Connection, Engine, text

#: Rows per chunk, and chunks in flight on the pool (one per core on the reference machine).
CHUNK_SIZE = 2000
WORKERS = 2


def stream_chunks(engine: Engine, query: str, params: dict, chunk_size: int) -> Iterable[list]:
    """Rows of ``query`` in chunks, through a server-side cursor (constant memory)."""
    with engine.connect() as conn:
        yield from chunks_of(conn, query, params, chunk_size)


def chunks_of(conn: Connection, query: str, params: dict, chunk_size: int, lock: Lock | None = None) -> Iterable[list]:
    """Rows of ``query`` on ``conn`` in chunks, through a server-side cursor closed once read; with ``lock``,
    every fetch holds it (``conn`` is shared with writers on other threads)."""
    guard = lock or nullcontext()
    with guard:
        result = conn.execution_options(yield_per=chunk_size).execute(text(query), params)
        partitions = result.partitions(chunk_size)
    try:
        while True:
            with guard:
                partition = next(partitions, None)
            if partition is None:
                return
            yield list(partition)
    finally:
        with guard:
            result.close()


def run_pipelined(chunks: Iterable[list], handle: Callable[[list], dict], workers: int) -> Counter:
    """Run ``handle`` on every chunk on ``workers`` threads, at most ``workers + 1`` chunks in memory;
    returns the summed counters the handlers return."""
    totals: Counter = Counter()
    pending: list[Future] = []
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="enrichment") as pool:
        for chunk in chunks:
            pending.append(pool.submit(handle, chunk))
            while len(pending) > workers:
                totals.update(pending.pop(0).result())
        for future in pending:
            totals.update(future.result())
    return totals
