"""``item_features``: language, text-search configuration, full-text vector, matched terms and sentiment per item."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

from sqlalchemy import Engine, text

from observatory_assets.defs.enrichment.language import (
    DEFAULT_CONFIDENCE_FLOOR,
    FALLBACK_CONFIG,
    TEXT_SEARCH_CONFIGS,
    detect_languages,
    text_search_config,
)
from observatory_assets.defs.enrichment.sentiment import score_texts
from observatory_assets.defs.enrichment.terms import compile_terms, query_design_terms
from observatory_assets.lib.chunks import CHUNK_SIZE, WORKERS, run_pipelined, stream_chunks
from observatory_assets.lib.statuses import ProcessingStatus

#: Text beyond this is left out of the full-text vector (a tsvector is limited to 1 MB).
MAX_FTS_CHARS = 200_000


@dataclass
class FeaturesResult:
    """What computing the features of one collection run did."""

    run_id: int
    items: int = 0
    languages: dict[str, int] = field(default_factory=dict)
    configs: dict[str, int] = field(default_factory=dict)
    low_confidence: int = 0
    with_terms: int = 0
    terms: dict[str, int] = field(default_factory=dict)
    sentiment: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


_FEATURE_ROWS = """
SELECT id, title, text FROM raw_items WHERE collection_run_id = :run_id
"""

#: An item's full-text vector in the text-search configuration ``config``: title weighted A, text B.
FULLTEXT_VECTOR = (
    "setweight(to_tsvector({config}, coalesce(r.title, '')), 'A') "
    f"|| setweight(to_tsvector({{config}}, left(coalesce(r.text, ''), {MAX_FTS_CHARS})), 'B')"
)

_APPLY_FEATURES = f"""
UPDATE raw_items r
   SET language = f.language,
       language_confidence = f.confidence,
       text_search_config = f.config,
       search_terms_matched = f.terms,
       search_vector = {FULLTEXT_VECTOR.format(config="f.config")},
       sentiment_score = f.sentiment_score,
       sentiment_label = f.sentiment_label,
       sentiment_method = f.sentiment_method,
       sentiment_reason = f.sentiment_reason,
       processing_status = :featurized
  FROM item_features_chunk f
 WHERE r.id = f.item_id AND r.collection_run_id = :run_id
"""


def featurize_run(
    engine: Engine,
    run_id: int,
    confidence_floor: float = DEFAULT_CONFIDENCE_FLOOR,
    chunk_size: int = CHUNK_SIZE,
    workers: int = WORKERS,
) -> FeaturesResult:
    """Compute and store the features of every item of a collection run (idempotent)."""
    started = time.perf_counter()
    with engine.connect() as conn:
        matcher = compile_terms(query_design_terms(conn, run_id))

    def handle(rows: list) -> dict:
        counts: Counter = Counter()
        staged = []
        languages = detect_languages([(title, body) for _, title, body in rows])
        sentiments = score_texts((language, title, body) for (_, title, body), (language, _) in zip(rows, languages))
        for (item_id, title, body), (language, confidence), sentiment in zip(rows, languages, sentiments):
            config = text_search_config(language, confidence, confidence_floor)
            terms = matcher.match(title, body)
            staged.append((item_id, language, confidence, config, terms, *sentiment.columns()))
            counts[f"sentiment:{sentiment.label or 'none'}"] += 1
            counts["items"] += 1
            counts[f"language:{language or 'none'}"] += 1
            counts[f"config:{config}"] += 1
            counts["low_confidence"] += confidence < confidence_floor
            counts["with_terms"] += bool(terms)
            counts.update(f"term:{t}" for t in terms)
        with engine.begin() as conn:
            conn.exec_driver_sql(
                "CREATE TEMP TABLE item_features_chunk (item_id bigint PRIMARY KEY, language text, "
                "confidence real, config regconfig, terms text[], sentiment_score real, sentiment_label text, "
                "sentiment_method text, sentiment_reason text) ON COMMIT DROP"
            )
            with conn.connection.driver_connection.cursor() as cursor:
                with cursor.copy("COPY item_features_chunk FROM STDIN") as copy:
                    for row in staged:
                        copy.write_row(row)
            conn.execute(text(_APPLY_FEATURES), {"run_id": run_id, "featurized": ProcessingStatus.FEATURIZED})
        return counts

    totals = run_pipelined(stream_chunks(engine, _FEATURE_ROWS, {"run_id": run_id}, chunk_size), handle, workers)
    return FeaturesResult(
        run_id=run_id,
        items=totals["items"],
        languages=_prefixed(totals, "language:"),
        configs=_prefixed(totals, "config:"),
        low_confidence=totals["low_confidence"],
        with_terms=totals["with_terms"],
        terms=_prefixed(totals, "term:"),
        sentiment=_prefixed(totals, "sentiment:"),
        seconds=time.perf_counter() - started,
    )


def _prefixed(counts: Counter, prefix: str) -> dict[str, int]:
    return {k[len(prefix) :]: v for k, v in sorted(counts.items(), key=lambda kv: -kv[1]) if k.startswith(prefix)}


def search_items(
    engine: Engine,
    query: str,
    language: str | None = None,
    limit: int = 20,
    sentiment: str | None = None,
    platform: str | None = None,
) -> list[dict]:
    """Full-text search over featurized items, best first.

    The query is parsed (``websearch_to_tsquery``: words, "phrases", -exclusions,
    OR) with every text-search configuration in use, so a Danish query finds
    Danish items through Danish stemming and an English one English items;
    ``language`` restricts the search to items of that language, ``sentiment`` to items of that label,
    ``platform`` to items published on that platform (``reddit``, ``bluesky``, ``rss``…).
    """
    if language is not None:
        configs = [TEXT_SEARCH_CONFIGS.get(language, FALLBACK_CONFIG)]
    else:
        configs = sorted(set(TEXT_SEARCH_CONFIGS.values()) | {FALLBACK_CONFIG})
    params: dict = {
        "query": query,
        "language": language,
        "limit": limit,
        "sentiment": sentiment,
        "platform": platform.lower() if platform else None,
    }
    parsed = []
    for n, config in enumerate(configs):
        params[f"config_{n}"] = config
        parsed.append(f"websearch_to_tsquery(CAST(:config_{n} AS regconfig), :query)")
    with engine.connect() as conn:
        rows = (
            conn.execute(
                text(
                    f"""
                WITH q AS (SELECT {" || ".join(parsed)} AS query)
                SELECT r.id, r.title, r.language, r.text_search_config::text AS config, r.published_at,
                       r.sentiment_label, r.sentiment_score, r.platform, ts_rank_cd(r.search_vector, q.query) AS rank
                  FROM raw_items r, q
                 WHERE r.search_vector @@ q.query
                   AND (CAST(:language AS text) IS NULL OR r.language = :language)
                   AND (CAST(:sentiment AS text) IS NULL OR r.sentiment_label = :sentiment)
                   AND (CAST(:platform AS text) IS NULL OR r.platform = :platform)
                 ORDER BY rank DESC, r.id
                 LIMIT :limit
                """
                ),
                params,
            )
            .mappings()
            .all()
        )
    return [dict(row) for row in rows]
