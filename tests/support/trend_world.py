"""A small world of sources, items, embeddings and events written straight into the real tables, for the
trend tests and benchmarks: the evidence code reads exactly the rows ingestion, enrichment and clustering
would have written (with Postgres computing the full-text vectors with each language's stemming)."""

from __future__ import annotations

import hashlib
from datetime import datetime

import numpy as np
from sqlalchemy import text

from resources.postgres import register_vector_type

DIMENSIONS = 384
CONFIGS = {"da": "danish", "en": "english"}


def story_vector(key: str, noise: float = 0.0, noise_key: str = "") -> np.ndarray:
    """A unit vector per story key; ``noise`` > 0 gives a near copy (cosine about 1 − noise²/2)."""
    rng = np.random.default_rng(int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big"))
    vector = rng.standard_normal(DIMENSIONS)
    vector /= np.linalg.norm(vector)
    if noise:
        jitter = np.random.default_rng(int.from_bytes(hashlib.sha256(noise_key.encode()).digest()[:8], "big"))
        extra = jitter.standard_normal(DIMENSIONS)
        vector = vector + noise * extra / np.linalg.norm(extra)
        vector /= np.linalg.norm(vector)
    return vector.astype(np.float32)


class TrendWorld:
    """Writes sources, items (with their features and embedding) and events into a migrated database."""

    def __init__(self, engine):
        self.engine = engine
        self.record_no = 0
        with engine.begin() as conn:
            self.run_id = conn.execute(
                text("INSERT INTO collection_runs (status) VALUES ('completed') RETURNING id")
            ).scalar_one()

    def source(self, name: str, credibility: float = 0.5) -> int:
        with self.engine.begin() as conn:
            return conn.execute(
                text(
                    "INSERT INTO sources (name, type, credibility) VALUES (:n, 'other', :c) "
                    "ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name RETURNING id"
                ),
                {"n": name, "c": credibility},
            ).scalar_one()

    def item(
        self, source: str, title: str, body: str, language: str, at: datetime, vector: np.ndarray | None = None
    ) -> int:
        """One kept item of ``source`` with its features and embedding; returns its id."""
        source_id = self.source(source)
        self.record_no += 1
        content_hash = hashlib.sha256(f"{source}|{title}|{body}|{self.record_no}".encode()).digest()
        vector = story_vector(title + body) if vector is None else vector
        with self.engine.begin() as conn:
            register_vector_type(conn.connection.driver_connection)
            item_id = conn.execute(
                text(
                    "INSERT INTO item_keys (source_id, external_id, content_hash, published_at, collection_run_id, "
                    "record_no) VALUES (:s, :x, :h, :at, :run, :no) RETURNING item_id"
                ),
                {"s": source_id, "x": f"x{self.record_no}", "h": content_hash, "at": at, "run": self.run_id,
                 "no": self.record_no},
            ).scalar_one()  # fmt: skip
            conn.execute(
                text(
                    """
                    INSERT INTO raw_items (id, source_id, collection_run_id, record_no, external_id, url, title, text,
                                           published_at, fetched_at, language, language_confidence, content_hash,
                                           text_search_config, search_vector, processing_status)
                    VALUES (:id, :s, :run, :no, :x, :url, :title, :body, :at, :at, :lang, 0.99, :h,
                            CAST(:cfg AS regconfig),
                            setweight(to_tsvector(CAST(:cfg AS regconfig), :title), 'A')
                            || setweight(to_tsvector(CAST(:cfg AS regconfig), :body), 'B'), 'featurized')
                    """
                ),
                {"id": item_id, "s": source_id, "run": self.run_id, "no": self.record_no, "x": f"x{self.record_no}",
                 "url": f"https://{source}.example/{self.record_no}", "title": title, "body": body, "at": at,
                 "lang": language, "h": content_hash, "cfg": CONFIGS.get(language, "simple")},
            )  # fmt: skip
            conn.execute(
                text(
                    "INSERT INTO item_embeddings (item_id, embedder, dimensions, embedding) "
                    "VALUES (:id, 'hashing', :d, :v)"
                ),
                {"id": item_id, "d": DIMENSIONS, "v": vector},
            )
        return item_id

    def duplicate(self, item_id: int, source: str) -> None:
        """A delivered row of ``source`` that ingestion linked to ``item_id`` as a copy (same content)."""
        source_id = self.source(source)
        self.record_no += 1
        with self.engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO item_duplicates (collection_run_id, record_no, source_id, external_id, "
                    "duplicate_of_item_id, matched_on) VALUES (:run, :no, :s, :x, :item, 'content_hash')"
                ),
                {"run": self.run_id, "no": self.record_no, "s": source_id, "x": f"d{self.record_no}", "item": item_id},
            )

    def event(self, item_ids: list[int], event_id: int | None = None) -> int:
        """An event of ``item_ids`` (a new one, or ``event_id`` rebuilt with these items), as clustering
        writes it: centroid = mean of the items' vectors, ``updated_at`` now."""
        with self.engine.begin() as conn:
            register_vector_type(conn.connection.driver_connection)
            rows = conn.execute(
                text(
                    "SELECT k.item_id, k.source_id, k.content_hash, r.published_at, r.title, e.embedding "
                    "FROM item_keys k JOIN raw_items r ON r.id = k.item_id "
                    "JOIN item_embeddings e ON e.item_id = k.item_id WHERE k.item_id = ANY(:ids) ORDER BY r.published_at"
                ),
                {"ids": item_ids},
            ).all()
            centroid = np.mean([np.asarray(r.embedding.to_numpy()) for r in rows], axis=0).astype(np.float32)
            params = {"c": centroid, "t": rows[0].title, "first": rows[0].published_at, "last": rows[-1].published_at,
                      "n": len(rows), "sources": len({r.source_id for r in rows}), "id": event_id}  # fmt: skip
            if event_id is None:
                event_id = conn.execute(
                    text(
                        "INSERT INTO events (embedder, centroid, title, first_seen_at, last_seen_at, item_count, "
                        "source_count, updated_at) VALUES ('hashing', :c, :t, :first, :last, :n, :sources, "
                        "clock_timestamp()) RETURNING id"
                    ),
                    params,
                ).scalar_one()
            else:
                conn.execute(
                    text(
                        "UPDATE events SET centroid = :c, title = :t, first_seen_at = :first, last_seen_at = :last, "
                        "item_count = :n, source_count = :sources, updated_at = clock_timestamp() WHERE id = :id"
                    ),
                    params,
                )
            conn.execute(text("DELETE FROM event_items WHERE item_id = ANY(:ids)"), {"ids": item_ids})
            for r in rows:
                conn.execute(
                    text(
                        "INSERT INTO event_items (item_id, event_id, similarity, item_time, item_hash, source_id) "
                        "VALUES (:i, :e, 1, :at, :h, :s)"
                    ),
                    {"i": r.item_id, "e": event_id, "at": r.published_at, "h": r.content_hash, "s": r.source_id},
                )
        return event_id

    def delete_event(self, event_id: int) -> None:
        with self.engine.begin() as conn:
            conn.execute(text("DELETE FROM events WHERE id = :id"), {"id": event_id})

    def take_down(self, item_ids: list[int], status: str = "pending") -> int:
        """A takedown request resolved to ``item_ids`` (the publishing workflow's tables)."""
        with self.engine.begin() as conn:
            request = conn.execute(
                text(
                    "INSERT INTO takedown_requests (item_id, requested_by, reason, status, subject_kind, subject) "
                    "VALUES (:first, 'test', 'privacy', :status, 'item', :first) RETURNING id"
                ),
                {"first": item_ids[0], "status": status},
            ).scalar_one()
            conn.execute(
                text("INSERT INTO takedown_items (request_id, item_id) SELECT :r, unnest(CAST(:ids AS bigint[]))"),
                {"r": request, "ids": item_ids},
            )
        return request


def bulk_world(engine, sources: dict[str, float], items: list[dict], events: list[list[int]]) -> list[int]:
    """Many items and events at once (for benchmarks): ``items`` are dicts with source, title, body, language,
    at and vector; ``events`` lists item positions. Sources get the given credibility. Each event was
    last updated when its last item arrived (``updated_at``), as online clustering leaves it. Returns event ids."""
    with engine.begin() as sa_conn:
        conn = sa_conn.connection.driver_connection
        register_vector_type(conn)
        run_id = conn.execute("INSERT INTO collection_runs (status) VALUES ('completed') RETURNING id").fetchone()[0]
        with conn.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO sources (name, type, credibility) VALUES (%s, 'other', %s) "
                "ON CONFLICT (name) DO UPDATE SET credibility = EXCLUDED.credibility",
                list(sources.items()),
            )
        source_ids = dict(conn.execute("SELECT name, id FROM sources").fetchall())
        conn.execute(
            "CREATE TEMP TABLE world_items (no int, source_id bigint, title text, body text, language text, "
            "at timestamptz, embedding vector(384)) ON COMMIT DROP"
        )
        with conn.cursor() as cursor, cursor.copy("COPY world_items FROM STDIN WITH (FORMAT BINARY)") as copy:
            copy.set_types(["int4", "int8", "text", "text", "text", "timestamptz", "vector"])
            for no, item in enumerate(items):
                copy.write_row((no, source_ids[item["source"]], item["title"], item["body"], item["language"],
                                item["at"], item["vector"]))  # fmt: skip
        conn.execute(
            """
            CREATE TEMP TABLE world_keys ON COMMIT DROP AS
            WITH k AS (
                INSERT INTO item_keys (source_id, external_id, content_hash, published_at, collection_run_id, record_no)
                SELECT source_id, 'w' || %(run)s || '-' || no, sha256(convert_to(%(run)s || '-' || no, 'UTF8')), at,
                       %(run)s, no
                  FROM world_items RETURNING item_id, record_no)
            SELECT * FROM k
            """,
            {"run": run_id},
        )
        conn.execute(
            """
            INSERT INTO raw_items (id, source_id, collection_run_id, record_no, external_id, url, title, text,
                                   published_at, fetched_at, language, language_confidence, content_hash,
                                   text_search_config, search_vector, processing_status)
            SELECT k.item_id, w.source_id, %(run)s, w.no, 'w' || %(run)s || '-' || w.no,
                   'https://example.org/' || k.item_id, w.title, w.body, w.at, w.at, w.language, 0.99,
                   sha256(convert_to(%(run)s || '-' || w.no, 'UTF8')), c.config,
                   setweight(to_tsvector(c.config, w.title), 'A') || setweight(to_tsvector(c.config, w.body), 'B'),
                   'featurized'
              FROM world_items w JOIN world_keys k ON k.record_no = w.no
             CROSS JOIN LATERAL (SELECT CAST(CASE w.language WHEN 'da' THEN 'danish' WHEN 'en' THEN 'english'
                                             ELSE 'simple' END AS regconfig) AS config) c
            """,
            {"run": run_id},
        )
        conn.execute(
            "INSERT INTO item_embeddings (item_id, embedder, dimensions, embedding) "
            "SELECT k.item_id, 'hashing', 384, w.embedding FROM world_items w JOIN world_keys k ON k.record_no = w.no"
        )
        conn.execute("CREATE TEMP TABLE world_members (event_no int, no int) ON COMMIT DROP")
        with conn.cursor() as cursor, cursor.copy("COPY world_members FROM STDIN") as copy:
            for event_no, members in enumerate(events):
                for no in members:
                    copy.write_row((event_no, no))
        conn.execute(
            """
            CREATE TEMP TABLE world_events ON COMMIT DROP AS
            SELECT m.event_no, nextval(pg_get_serial_sequence('events', 'id')) AS id,
                   avg(w.embedding) AS centroid, min(w.title) AS title, min(w.at) AS first_at, max(w.at) AS last_at,
                   count(*) AS n, count(DISTINCT w.source_id) AS sources
              FROM world_members m JOIN world_items w ON w.no = m.no GROUP BY m.event_no
            """
        )
        conn.execute(
            "INSERT INTO events (id, embedder, centroid, title, first_seen_at, last_seen_at, item_count, source_count, "
            "updated_at) OVERRIDING SYSTEM VALUE SELECT id, 'hashing', centroid, title, first_at, last_at, n, sources, "
            "last_at FROM world_events"
        )
        conn.execute(
            """
            INSERT INTO event_items (item_id, event_id, similarity, item_time, item_hash, source_id)
            SELECT k.item_id, e.id, 1, w.at, sha256(convert_to(%(run)s || '-' || w.no, 'UTF8')), w.source_id
              FROM world_members m JOIN world_events e ON e.event_no = m.event_no
              JOIN world_items w ON w.no = m.no JOIN world_keys k ON k.record_no = w.no
            """,
            {"run": run_id},
        )
        return [r[0] for r in conn.execute("SELECT id FROM world_events ORDER BY event_no").fetchall()]
