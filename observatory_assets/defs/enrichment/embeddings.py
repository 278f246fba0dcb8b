"""``item_embeddings``: one vector per item from the configured embedder, written with binary COPY."""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import Engine, text

from observatory_assets.defs.enrichment.embedders import LEAD_CHARS, Embedder
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
    seconds: float = 0.0


_TO_EMBED = f"""
SELECT r.id, r.title, left(r.text, {2 * LEAD_CHARS})
  FROM raw_items r
  LEFT JOIN item_embeddings e ON e.item_id = r.id
 WHERE r.collection_run_id = :run_id
   AND (e.item_id IS NULL OR e.embedder <> :embedder OR e.dimensions <> :dimensions OR :force)
"""

_UPSERT_EMBEDDINGS = """
INSERT INTO item_embeddings (item_id, embedder, dimensions, embedding, embedded_at)
SELECT item_id, :embedder, :dimensions, embedding, clock_timestamp() FROM item_embeddings_chunk
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
) -> EmbeddingsResult:
    """Embed the items of a collection run that have no vector from ``embedder`` yet (all with ``force``)."""
    started = time.perf_counter()
    params = {"run_id": run_id, "embedder": embedder.name, "dimensions": embedder.dimensions, "force": force}

    def handle(rows: list) -> dict:
        vectors = embedder.embed([(title, body) for _, title, body in rows])
        with engine.begin() as conn:
            raw = conn.connection.driver_connection
            register_vector_type(raw)
            conn.exec_driver_sql(
                f"CREATE TEMP TABLE item_embeddings_chunk (item_id bigint, embedding vector({embedder.dimensions})) "
                "ON COMMIT DROP"
            )
            with raw.cursor() as cursor:
                with cursor.copy("COPY item_embeddings_chunk FROM STDIN WITH (FORMAT BINARY)") as copy:
                    copy.set_types(["int8", "vector"])
                    for (item_id, _, _), vector in zip(rows, vectors):
                        copy.write_row((item_id, vector))
            conn.execute(text(_UPSERT_EMBEDDINGS), params)
        return {"embedded": len(rows)}

    totals = run_pipelined(stream_chunks(engine, _TO_EMBED, params, chunk_size), handle, workers)
    with engine.connect() as conn:
        total = conn.execute(
            text("SELECT count(*) FROM raw_items WHERE collection_run_id = :r"), {"r": run_id}
        ).scalar_one()
    return EmbeddingsResult(
        run_id=run_id,
        embedder=embedder.name,
        dimensions=embedder.dimensions,
        embedded=totals["embedded"],
        already_embedded=total - totals["embedded"],
        seconds=time.perf_counter() - started,
    )
