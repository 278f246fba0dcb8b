"""``item_embeddings``: one vector per item from the configured embedder, written with binary COPY.

Inserting into the HNSW graph one vector at a time is most of the cost of a write (measured about
10x slower per vector than building the graph anew over the whole table). A run that writes a large
share of the table (a first load, a backfill, a new space) therefore stages all its vectors, then in
one transaction drops the index, replaces them and builds the index again (through the owner's
functions of migration 0009, which hold the index's one definition); smaller runs upsert chunk by chunk into
the maintained index. Either way a killed run leaves either nothing or whole chunks, and a re-run no duplicates.

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
from observatory_assets.lib.chunks import CHUNK_SIZE, WORKERS, chunks_of, run_pipelined, stream_chunks
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

#: The run's stored vectors that the run replaces (a rebuilding run writes them again with COPY).
_REPLACED = f"""
DELETE FROM item_embeddings e USING raw_items r
 WHERE e.item_id = r.id AND r.collection_run_id = :run_id AND {_NEEDS_EMBEDDING}
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

    with _vector_writer(engine, embedder, {**params, "count_all": count_all}, rebuild, chunk_size) as (chunks, write):
        totals = run_pipelined(chunks, handle, workers)
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
def _vector_writer(engine: Engine, embedder: Embedder, params: dict, rebuild: bool, chunk_size: int):
    """``(chunks, write)`` for the pipeline: the run's rows to embed (``_TO_EMBED``) in chunks, and
    ``write(rows, vectors)`` for the workers, which stores the vectors of the rows that need one and returns
    how many.

    Chunk by chunk, each in its own transaction, upserted into the maintained index (the rows streamed on
    a connection of their own); or, with ``rebuild``, all in one transaction on one connection: the index
    dropped and the vectors the run replaces deleted first, the rows streamed and the vectors copied
    straight into the table, the index built at the end (the table stays locked from the first step on).
    """
    if not rebuild:

        def write_chunk(rows: list, vectors: np.ndarray) -> int:
            needed = _needed(rows, vectors)
            if needed:
                with engine.connect() as sa_conn:
                    raw = sa_conn.connection.driver_connection
                    with raw.transaction():
                        _create_stage(raw, embedder)
                        _copy_vectors(raw, _COPY_STAGE, needed)
                        raw.execute(_UPSERT_EMBEDDINGS, params)
            return len(needed)

        yield stream_chunks(engine, _TO_EMBED, params, chunk_size), write_chunk
        return
    lock = threading.Lock()
    with engine.begin() as sa_conn:
        raw = sa_conn.connection.driver_connection
        register_vector_type(raw)
        raw.execute("SELECT drop_item_embeddings_index()")
        sa_conn.execute(text(_REPLACED), params)

        def copy_chunk(rows: list, vectors: np.ndarray) -> int:
            needed = [
                (item_id, embedder.name, embedder.dimensions, vector) for item_id, vector in _needed(rows, vectors)
            ]
            with lock:
                _copy_vectors(raw, _COPY_TABLE, needed)
            return len(needed)

        chunks = chunks_of(sa_conn, _TO_EMBED, params, chunk_size, lock)
        try:
            yield chunks, copy_chunk
        finally:
            chunks.close()  # the stream's cursor: the index cannot be built while it is open
        raw.execute("SELECT build_item_embeddings_index()")


def _needed(rows: list, vectors: np.ndarray) -> list[tuple[int, np.ndarray]]:
    return [(row[0], vector) for row, vector in zip(rows, vectors) if row[3]]


def _create_stage(raw, embedder: Embedder) -> None:
    register_vector_type(raw)
    raw.execute(
        f"CREATE TEMP TABLE item_embeddings_chunk (item_id bigint, embedding vector({embedder.dimensions})) "
        "ON COMMIT DROP"
    )


#: Binary COPY of (item id, vector) rows into a transaction's stage, and of whole rows into the table.
_COPY_STAGE = ("COPY item_embeddings_chunk (item_id, embedding) FROM STDIN WITH (FORMAT BINARY)", ["int8", "vector"])
_COPY_TABLE = (
    "COPY item_embeddings (item_id, embedder, dimensions, embedding) FROM STDIN WITH (FORMAT BINARY)",
    ["int8", "text", "int4", "vector"],
)


def _copy_vectors(raw, copy_statement: tuple[str, list[str]], rows: list[tuple]) -> None:
    statement, types = copy_statement
    with raw.cursor() as cursor:
        with cursor.copy(statement) as copy:
            copy.set_types(types)
            for row in rows:
                copy.write_row(row)


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
