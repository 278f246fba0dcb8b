"""``item_embeddings``: one vector per item from the configured embedder, written with binary COPY.

Embedders that learn from the archive (the lexical ones: ``embed_and_count``)
also count, in the same pass, what the run adds to the archive's document
frequencies, and store it as the run's row of ``lexical_run_frequencies``; the
vectors themselves come from the embedder's frozen space (see ``spaces``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from sqlalchemy import Engine, text

from observatory_assets.defs.enrichment.embedders import Embedder
from observatory_assets.defs.enrichment.spaces import record_run_frequencies
from observatory_assets.defs.enrichment.vectors import LEAD_CHARS
from observatory_assets.lib.chunks import CHUNK_SIZE, WORKERS, run_pipelined, stream_chunks
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


def embed_run(
    engine: Engine,
    embedder: Embedder,
    run_id: int,
    force: bool = False,
    chunk_size: int = CHUNK_SIZE,
    workers: int = WORKERS,
    progress: Callable[[int, int], None] | None = None,
) -> EmbeddingsResult:
    """Embed the items of a collection run that have no vector from ``embedder`` yet (all with ``force``).

    ``progress(done, total)`` is called after each chunk (for slow embedders on backfills).
    """
    started = time.perf_counter()
    counts_documents = hasattr(embedder, "embed_and_count")
    params = {"run_id": run_id, "embedder": embedder.name, "dimensions": embedder.dimensions, "force": force}
    with engine.connect() as conn:
        total, pending, counted = conn.execute(
            text(
                f"SELECT count(*), count(*) FILTER (WHERE {_NEEDS_EMBEDDING}), "
                "EXISTS (SELECT 1 FROM lexical_run_frequencies WHERE collection_run_id = :run_id) "
                "FROM raw_items r LEFT JOIN item_embeddings e ON e.item_id = r.id WHERE r.collection_run_id = :run_id"
            ),
            params,
        ).one()
    # the run's document frequencies are counted over all its items, once (and again with force)
    count_all = counts_documents and (force or not counted)
    done = [0]

    def handle(rows: list) -> dict:
        documents = [(title, body) for _, title, body, _ in rows]
        if count_all:
            vectors, frequencies = embedder.embed_and_count(documents)
        else:
            needed = [i for i, row in enumerate(rows) if row[3]]
            rows = [rows[i] for i in needed]
            vectors = embedder.embed([documents[i] for i in needed])
        written = _write_vectors(engine, embedder, rows, vectors, params)
        done[0] += written
        if progress is not None:
            progress(done[0], pending)
        if not count_all:
            return {"embedded": written}
        return {"embedded": written, "counted": len(documents), "frequencies": frequencies}

    query_params = {**params, "count_all": count_all}
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


def _write_vectors(engine: Engine, embedder: Embedder, rows: list, vectors: np.ndarray, params: dict) -> int:
    """Upsert the vectors of the rows that need one (binary COPY into a chunk table, then one INSERT)."""
    needed = [(row[0], vector) for row, vector in zip(rows, vectors) if row[3]]
    if not needed:
        return 0
    with engine.connect() as sa_conn:
        raw = sa_conn.connection.driver_connection
        register_vector_type(raw)
        with raw.transaction():
            raw.execute(
                f"CREATE TEMP TABLE item_embeddings_chunk (item_id bigint, embedding vector({embedder.dimensions})) "
                "ON COMMIT DROP"
            )
            with raw.cursor() as cursor:
                with cursor.copy("COPY item_embeddings_chunk FROM STDIN WITH (FORMAT BINARY)") as copy:
                    copy.set_types(["int8", "vector"])
                    for item_id, vector in needed:
                        copy.write_row((item_id, vector))
            raw.execute(_UPSERT_EMBEDDINGS, params)
    return len(needed)
