"""``item_embeddings``: one vector per item from the configured embedder, written with binary COPY.

Inserting into the HNSW graph one vector at a time is most of the cost of a write (measured about
10x slower per vector than building the graph anew over the whole table). A run that writes a large
share of the table (a first load, a backfill, a new space) therefore stages all its vectors, then in
one transaction drops the index, upserts them and builds the index again (through the owner's
functions of migration 0009, which hold the index's one definition); smaller runs upsert chunk by chunk into the maintained index. Either way
a killed run leaves either nothing or whole chunks, and a re-run no duplicates.

Embedders that learn from the archive (the lexical ones: ``embed_and_count``)
also count, in the same pass, what the run adds to the archive's document
frequencies, and store it as the run's row of ``lexical_run_frequencies``; the
vectors themselves come from the embedder's frozen space (see ``spaces``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from sqlalchemy import Connection, Engine, text

from observatory_assets.defs.enrichment.embedders import Embedder
from observatory_assets.defs.enrichment.spaces import record_run_frequencies
from observatory_assets.defs.enrichment.vectors import LEAD_CHARS
from observatory_assets.lib.chunks import CHUNK_SIZE, WORKERS, run_pipelined, stream_chunks
from observatory_assets.lib.statuses import ProcessingStatus
from resources.postgres import register_vector_type

# ---------------------------------------------------------------- item_embeddings


@dataclass
class EmbeddingsResult:
    """What embedding one collection run did."""

    run_id: int
    embedder: str
    dimensions: int
    embedded: int = 0
    already_embedded: int = 0
    counted: int = 0
    seconds: float = 0.0


_NEEDS_EMBEDDING = "(e.item_id IS NULL OR e.embedder <> :embedder OR e.dimensions <> :dimensions OR :force)"

_TO_EMBED = f"""
SELECT r.id, r.title, left(r.text, {2 * LEAD_CHARS}), {_NEEDS_EMBEDDING} AS needed
  FROM raw_items r
  LEFT JOIN item_embeddings e ON e.item_id = r.id
 WHERE r.collection_run_id = :run_id
   AND ({_NEEDS_EMBEDDING} OR :count_all)
"""

_UPSERT_EMBEDDINGS = """
INSERT INTO item_embeddings (item_id, embedder, dimensions, embedding, embedded_at)
SELECT item_id, %(embedder)s, %(dimensions)s, embedding, clock_timestamp() FROM item_embeddings_chunk
ON CONFLICT (item_id) DO UPDATE
   SET embedder = EXCLUDED.embedder, dimensions = EXCLUDED.dimensions,
       embedding = EXCLUDED.embedding, embedded_at = EXCLUDED.embedded_at
"""

#: A run whose vectors are at least this share of the table after it rebuilds the index instead of
#: inserting into it (rebuilding measured ~10x cheaper per vector; the margin covers a large table's
#: graph not fitting into ``maintenance_work_mem``).
REBUILD_SHARE = 0.2


def embed_run(
    engine: Engine,
    embedder: Embedder,
    run_id: int,
    force: bool = False,
    chunk_size: int = CHUNK_SIZE,
    workers: int = WORKERS,
    progress: Callable[[int, int], None] | None = None,
    rebuild_share: float = REBUILD_SHARE,
) -> EmbeddingsResult:
    """Embed the items of a collection run that have no vector from ``embedder`` yet (all with ``force``).

    ``progress(done, total)`` is called after each chunk (for slow embedders on backfills). When the
    run's vectors are at least ``rebuild_share`` of the table afterwards, the HNSW index is rebuilt
    around the write (see module).
    """
    started = time.perf_counter()
    counts_documents = hasattr(embedder, "embed_and_count")
    params = {"run_id": run_id, "embedder": embedder.name, "dimensions": embedder.dimensions, "force": force}
    with engine.connect() as conn:
        total, pending, new, counted, stored = conn.execute(
            text(
                f"SELECT count(*), count(*) FILTER (WHERE {_NEEDS_EMBEDDING}), count(*) FILTER (WHERE e.item_id IS NULL), "
                "EXISTS (SELECT 1 FROM lexical_run_frequencies WHERE collection_run_id = :run_id), "
                "(SELECT count(*) FROM item_embeddings) "
                "FROM raw_items r LEFT JOIN item_embeddings e ON e.item_id = r.id WHERE r.collection_run_id = :run_id"
            ),
            params,
        ).one()
    # the run's document frequencies are counted over all its items, once (and again with force)
    count_all = counts_documents and (force or not counted)
    done = [0]
    rebuild = pending > 0 and pending >= rebuild_share * (stored + new)

    def handle(rows: list) -> dict:
        documents = [(title, body) for _, title, body, _ in rows]
        if count_all:
            vectors, frequencies = embedder.embed_and_count(documents)
        else:
            needed = [i for i, row in enumerate(rows) if row[3]]
            rows = [rows[i] for i in needed]
            vectors = embedder.embed([documents[i] for i in needed])
        written = write(rows, vectors)
        done[0] += written
        if progress is not None:
            progress(done[0], pending)
        if not count_all:
            return {"embedded": written}
        return {"embedded": written, "counted": len(documents), "frequencies": frequencies}

    query_params = {**params, "count_all": count_all}
    with _vector_writer(engine, embedder, params, rebuild) as write:
        totals = run_pipelined(stream_chunks(engine, _TO_EMBED, query_params, chunk_size), handle, workers)
    if count_all and totals["counted"]:
        with engine.connect() as sa_conn:
            raw = sa_conn.connection.driver_connection
            with raw.transaction():
                record_run_frequencies(raw, run_id, totals["counted"], totals["frequencies"])
    return EmbeddingsResult(
        run_id=run_id,
        embedder=embedder.name,
        dimensions=embedder.dimensions,
        embedded=totals["embedded"],
        already_embedded=total - totals["embedded"],
        counted=totals["counted"],
        seconds=time.perf_counter() - started,
    )


def embed_runs_of_older_spaces(engine: Engine, embedder: Embedder) -> int:
    """Embed again, in ``embedder``'s space, every item whose vector comes from another one (after a
    provisional space was settled: the archive is small); how many were embedded."""
    with engine.connect() as conn:
        runs = (
            conn.execute(
                text(
                    "SELECT DISTINCT r.collection_run_id FROM item_embeddings e JOIN raw_items r ON r.id = e.item_id "
                    "WHERE e.embedder <> :embedder ORDER BY 1"
                ),
                {"embedder": embedder.name},
            )
            .scalars()
            .all()
        )
    return sum(embed_run(engine, embedder, run_id).embedded for run_id in runs)


@contextmanager
def _vector_writer(engine: Engine, embedder: Embedder, params: dict, rebuild: bool):
    """``write(rows, vectors)`` for the pipeline's workers: it stores the vectors of the rows that need one
    and returns how many.

    Chunk by chunk, each in its own transaction, into the maintained index; or, with ``rebuild``, staged on
    one connection and upserted when the block ends, in the same transaction as dropping and rebuilding
    the index. The stream of items (another connection, reading ``item_embeddings``) has ended by then,
    so taking the table's exclusive lock cannot wait on this run itself.
    """
    if not rebuild:

        def write_chunk(rows: list, vectors: np.ndarray) -> int:
            needed = _needed(rows, vectors)
            if needed:
                with engine.connect() as sa_conn:
                    raw = sa_conn.connection.driver_connection
                    with raw.transaction():
                        _create_stage(raw, embedder)
                        _stage(raw, needed)
                        raw.execute(_UPSERT_EMBEDDINGS, params)
            return len(needed)

        yield write_chunk
        return
    lock = threading.Lock()
    with engine.connect() as sa_conn:
        raw = sa_conn.connection.driver_connection
        with raw.transaction():
            _create_stage(raw, embedder)

            def stage_chunk(rows: list, vectors: np.ndarray) -> int:
                needed = _needed(rows, vectors)
                with lock:
                    _stage(raw, needed)
                return len(needed)

            yield stage_chunk
            raw.execute("SELECT drop_item_embeddings_index()")
            raw.execute(_UPSERT_EMBEDDINGS, params)
            raw.execute("SELECT build_item_embeddings_index()")


def _needed(rows: list, vectors: np.ndarray) -> list[tuple[int, np.ndarray]]:
    return [(row[0], vector) for row, vector in zip(rows, vectors) if row[3]]


def _create_stage(raw, embedder: Embedder) -> None:
    register_vector_type(raw)
    raw.execute(
        f"CREATE TEMP TABLE item_embeddings_chunk (item_id bigint, embedding vector({embedder.dimensions})) "
        "ON COMMIT DROP"
    )


def _stage(raw, needed: list[tuple[int, np.ndarray]]) -> None:
    """Binary COPY of (item id, vector) rows into this transaction's ``item_embeddings_chunk``."""
    with raw.cursor() as cursor:
        with cursor.copy("COPY item_embeddings_chunk FROM STDIN WITH (FORMAT BINARY)") as copy:
            copy.set_types(["int8", "vector"])
            for item_id, vector in needed:
                copy.write_row((item_id, vector))


_RUNS_TO_ENRICH = """
SELECT DISTINCT r.collection_run_id
  FROM raw_items r LEFT JOIN item_embeddings e ON e.item_id = r.id
 WHERE r.processing_status = :loaded OR e.item_id IS NULL OR e.embedder <> :embedder
 ORDER BY 1
"""


def runs_to_enrich(conn: Connection, embedder: str) -> list[int]:
    """The collection runs with items still to enrich: not featurized yet, or without a vector of ``embedder``."""
    params = {"embedder": embedder, "loaded": ProcessingStatus.LOADED}
    return list(conn.execute(text(_RUNS_TO_ENRICH), params).scalars())
