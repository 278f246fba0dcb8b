"""Enrichment: what each loaded item is about, in a form Postgres and the clustering can use.

* ``item_features`` — per item of a collection run: the detected language and
  the detector's confidence (``py3langid``, a maintained langid.py fork), the
  text-search configuration of that language (``danish``, ``english``, …;
  ``simple`` when the language has none or the detector is not confident), the
  weighted full-text vector (title A, text B) and the search terms of the run's
  query design that occur in title or text (case- and accent-insensitive,
  whole words and phrases).
* ``item_embeddings`` — one vector per item from the configured
  :class:`~observatory_assets.embedders.EmbedderResource`, tagged with the
  embedder's name so a change of backend re-embeds instead of mixing spaces.

Both are partitioned like ``raw_items`` (one partition per collection run), run
in chunks of a few thousand items on a pool of connections (Python work of one
chunk overlaps the SQL of another) and are idempotent: every value is a pure
function of the item, written with UPDATE / upsert keyed on the item id.
"""

import re
import time
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache

import dagster as dg
from pydantic import Field
from sqlalchemy import Connection, Engine, text

from observatory_assets.embedders import LEAD_CHARS, Embedder, EmbedderResource, lead
from observatory_assets.ingestion import collection_run_partitions, ingest_job, raw_items
from resources import PostgresResource

ENRICHMENT = "enrichment"

#: ISO 639-1 code → PostgreSQL text-search configuration (those shipped with PostgreSQL 18).
TEXT_SEARCH_CONFIGS = {
    "ar": "arabic", "hy": "armenian", "eu": "basque", "ca": "catalan", "da": "danish", "nl": "dutch",
    "en": "english", "fi": "finnish", "fr": "french", "de": "german", "el": "greek", "hi": "hindi",
    "hu": "hungarian", "id": "indonesian", "ga": "irish", "it": "italian", "lt": "lithuanian", "ne": "nepali",
    "no": "norwegian", "nn": "norwegian", "pt": "portuguese", "ro": "romanian", "ru": "russian",
    "sr": "serbian", "es": "spanish", "sv": "swedish", "ta": "tamil", "tr": "turkish", "yi": "yiddish",
}  # fmt: skip
FALLBACK_CONFIG = "simple"
DEFAULT_CONFIDENCE_FLOOR = 0.6
#: Characters of text (after the title) the language detector reads: enough to decide, cheap to score.
DETECT_CHARS = 200
#: Text beyond this is left out of the full-text vector (a tsvector is limited to 1 MB).
MAX_FTS_CHARS = 200_000
CHUNK_SIZE = 2000
WORKERS = 2


# ---------------------------------------------------------------- language


@lru_cache(maxsize=1)
def _identifier():
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def detect_language(title: str | None, body: str | None) -> tuple[str | None, float]:
    """The language of an item (ISO 639 code) and the detector's probability for it.

    ``(None, 0.0)`` when there are no letters to judge.
    """
    sample = " ".join(part for part in ((title or "").strip(), lead(body, DETECT_CHARS)) if part)
    if not any(ch.isalpha() for ch in sample):
        return None, 0.0
    language, confidence = _identifier().classify(sample)
    return language, round(float(confidence), 4)


def text_search_config(language: str | None, confidence: float, floor: float = DEFAULT_CONFIDENCE_FLOOR) -> str:
    """The text-search configuration for an item: its language's, or ``simple`` below the confidence floor."""
    if language is None or confidence < floor:
        return FALLBACK_CONFIG
    return TEXT_SEARCH_CONFIGS.get(language, FALLBACK_CONFIG)


# ---------------------------------------------------------------- search terms

_FOLD = str.maketrans({"ø": "o", "æ": "ae", "œ": "oe", "ß": "ss", "ð": "d", "þ": "th", "ł": "l", "đ": "d"})


def fold(value: str) -> str:
    """Case- and accent-insensitive form of a text: casefolded, accents stripped, ø→o, æ→ae."""
    decomposed = unicodedata.normalize("NFKD", value.casefold().translate(_FOLD))
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


@dataclass(frozen=True)
class TermMatcher:
    """The search terms of a query design, compiled to one whole-word/phrase pattern."""

    terms: tuple[str, ...]
    pattern: re.Pattern | None
    by_folded: dict[str, str]

    def match(self, title: str | None, body: str | None) -> list[str]:
        """The terms (as written in the query design) that occur in title or text, sorted."""
        if self.pattern is None:
            return []
        found = {self.by_folded[_squash(m)] for m in self.pattern.findall(fold(f"{title or ''}\n{body or ''}"))}
        return sorted(found)


def _squash(value: str) -> str:
    return " ".join(value.split())


def compile_terms(terms: Iterable[str]) -> TermMatcher:
    """A matcher for ``terms``; a term matches as a whole word or phrase, whitespace-insensitively."""
    by_folded: dict[str, str] = {}
    for term in terms:
        folded = _squash(fold(term))
        if folded:
            by_folded.setdefault(folded, term.strip())
    if not by_folded:
        return TermMatcher((), None, {})
    alternatives = sorted(by_folded, key=len, reverse=True)
    body = "|".join(r"\s+".join(re.escape(word) for word in alt.split(" ")) for alt in alternatives)
    return TermMatcher(tuple(by_folded.values()), re.compile(rf"(?<!\w)(?:{body})(?!\w)"), by_folded)


def query_design_terms(conn: Connection, run_id: int) -> list[str]:
    """The search terms of the query design behind a collection run (none without one).

    ``query_designs.search_terms`` holds ``{"term": ..., "language": ...}`` objects or plain strings.
    """
    terms = conn.execute(
        text(
            """
            SELECT coalesce(t ->> 'term', t #>> '{}')
              FROM collection_runs r
              JOIN query_designs q ON q.id = r.query_design_id
             CROSS JOIN LATERAL jsonb_array_elements(q.search_terms) AS t
             WHERE r.id = :run_id
            """
        ),
        {"run_id": run_id},
    ).scalars()
    return [t for t in terms if t]


# ---------------------------------------------------------------- chunked, pipelined processing


def _stream_chunks(engine: Engine, query: str, params: dict, chunk_size: int) -> Iterable[list]:
    """Rows of ``query`` in chunks, through a server-side cursor (constant memory)."""
    with engine.connect() as conn:
        result = conn.execution_options(yield_per=chunk_size).execute(text(query), params)
        for partition in result.partitions():
            yield list(partition)


def _run_pipelined(chunks: Iterable[list], handle: Callable[[list], dict], workers: int) -> Counter:
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


# ---------------------------------------------------------------- item_features


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
    seconds: float = 0.0


_FEATURE_ROWS = """
SELECT id, title, text FROM raw_items WHERE collection_run_id = :run_id
"""

_APPLY_FEATURES = f"""
UPDATE raw_items r
   SET language = f.language,
       language_confidence = f.confidence,
       text_search_config = f.config,
       search_terms_matched = f.terms,
       search_vector = setweight(to_tsvector(f.config, coalesce(r.title, '')), 'A')
                    || setweight(to_tsvector(f.config, left(coalesce(r.text, ''), {MAX_FTS_CHARS})), 'B'),
       processing_status = 'featurized'
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
        for item_id, title, body in rows:
            language, confidence = detect_language(title, body)
            config = text_search_config(language, confidence, confidence_floor)
            terms = matcher.match(title, body)
            staged.append((item_id, language, confidence, config, terms))
            counts["items"] += 1
            counts[f"language:{language or 'none'}"] += 1
            counts[f"config:{config}"] += 1
            counts["low_confidence"] += confidence < confidence_floor
            counts["with_terms"] += bool(terms)
            counts.update(f"term:{t}" for t in terms)
        with engine.begin() as conn:
            conn.exec_driver_sql(
                "CREATE TEMP TABLE item_features_chunk (item_id bigint PRIMARY KEY, language text, "
                "confidence real, config regconfig, terms text[]) ON COMMIT DROP"
            )
            with conn.connection.driver_connection.cursor() as cursor:
                with cursor.copy("COPY item_features_chunk FROM STDIN") as copy:
                    for row in staged:
                        copy.write_row(row)
            conn.execute(text(_APPLY_FEATURES), {"run_id": run_id})
        return counts

    totals = _run_pipelined(_stream_chunks(engine, _FEATURE_ROWS, {"run_id": run_id}, chunk_size), handle, workers)
    return FeaturesResult(
        run_id=run_id,
        items=totals["items"],
        languages=_prefixed(totals, "language:"),
        configs=_prefixed(totals, "config:"),
        low_confidence=totals["low_confidence"],
        with_terms=totals["with_terms"],
        terms=_prefixed(totals, "term:"),
        seconds=time.perf_counter() - started,
    )


def _prefixed(counts: Counter, prefix: str) -> dict[str, int]:
    return {k[len(prefix) :]: v for k, v in sorted(counts.items(), key=lambda kv: -kv[1]) if k.startswith(prefix)}


def search_items(engine: Engine, query: str, language: str | None = None, limit: int = 20) -> list[dict]:
    """Full-text search over featurized items, best first.

    The query is parsed (``websearch_to_tsquery``: words, "phrases", -exclusions,
    OR) with every text-search configuration in use, so a Danish query finds
    Danish items through Danish stemming and an English one English items;
    ``language`` restricts the search to items of that language.
    """
    if language is not None:
        configs = [TEXT_SEARCH_CONFIGS.get(language, FALLBACK_CONFIG)]
    else:
        configs = sorted(set(TEXT_SEARCH_CONFIGS.values()) | {FALLBACK_CONFIG})
    params: dict = {"query": query, "language": language, "limit": limit}
    parsed = []
    for n, config in enumerate(configs):
        params[f"config_{n}"] = config
        parsed.append(f"websearch_to_tsquery(CAST(:config_{n} AS regconfig), :query)")
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                f"""
                WITH q AS (SELECT {" || ".join(parsed)} AS query)
                SELECT r.id, r.title, r.language, r.text_search_config::text AS config, r.published_at,
                       ts_rank_cd(r.search_vector, q.query) AS rank
                  FROM raw_items r, q
                 WHERE r.search_vector @@ q.query
                   AND (CAST(:language AS text) IS NULL OR r.language = :language)
                 ORDER BY rank DESC, r.id
                 LIMIT :limit
                """
            ),
            params,
        ).mappings().all()
    return [dict(row) for row in rows]


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


def register_vector_type(dbapi_connection) -> None:
    """Teach a psycopg connection pgvector's ``vector`` type (numpy in, ``Vector`` out; binary COPY)."""
    from pgvector.psycopg.vector import register_vector_info
    from psycopg.types import TypeInfo

    register_vector_info(dbapi_connection, TypeInfo.fetch(dbapi_connection, "vector"))


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

    totals = _run_pipelined(_stream_chunks(engine, _TO_EMBED, params, chunk_size), handle, workers)
    with engine.connect() as conn:
        total = conn.execute(text("SELECT count(*) FROM raw_items WHERE collection_run_id = :r"), {"r": run_id}).scalar_one()
    return EmbeddingsResult(
        run_id=run_id,
        embedder=embedder.name,
        dimensions=embedder.dimensions,
        embedded=totals["embedded"],
        already_embedded=total - totals["embedded"],
        seconds=time.perf_counter() - started,
    )


# ---------------------------------------------------------------- Dagster


class ItemFeaturesConfig(dg.Config):
    confidence_floor: float = Field(
        default=DEFAULT_CONFIDENCE_FLOOR,
        description="Below this detector probability an item gets the 'simple' text-search configuration.",
    )


@dg.asset(
    partitions_def=collection_run_partitions,
    deps=[raw_items],
    group_name=ENRICHMENT,
    kinds={"postgres"},
    retry_policy=dg.RetryPolicy(max_retries=2, delay=5),
)
def item_features(
    context: dg.AssetExecutionContext, config: ItemFeaturesConfig, postgres: PostgresResource
) -> dg.MaterializeResult:
    """Language (with confidence), text-search configuration, full-text vector and matched query-design
    search terms of every item of one collection run. Idempotent per run."""
    run_id = int(context.partition_key)
    result = featurize_run(postgres.get_engine(), run_id, confidence_floor=config.confidence_floor)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": dg.MetadataValue.int(result.items),
            "collection_run": dg.MetadataValue.int(run_id),
            "languages": dg.MetadataValue.json(result.languages),
            "text_search_configs": dg.MetadataValue.json(result.configs),
            "below_confidence_floor": dg.MetadataValue.int(result.low_confidence),
            "items_matching_search_terms": dg.MetadataValue.int(result.with_terms),
            "search_terms_matched": dg.MetadataValue.json(result.terms),
            "seconds": dg.MetadataValue.float(round(result.seconds, 3)),
            "items_per_second": dg.MetadataValue.float(round(result.items / max(result.seconds, 1e-9), 1)),
        }
    )


@dg.asset_check(
    asset=item_features,
    description="Every featurized item has a text-search configuration and a full-text vector.",
)
def item_features_complete(postgres: PostgresResource) -> dg.AssetCheckResult:
    with postgres.get_engine().connect() as conn:
        incomplete, featurized = conn.execute(
            text(
                "SELECT count(*) FILTER (WHERE text_search_config IS NULL OR search_vector IS NULL), count(*) "
                "FROM raw_items WHERE processing_status = 'featurized'"
            )
        ).one()
    return dg.AssetCheckResult(
        passed=incomplete == 0, metadata={"featurized_items": featurized, "without_config_or_vector": incomplete}
    )


class ItemEmbeddingsConfig(dg.Config):
    force: bool = Field(default=False, description="Embed every item of the run again, even if already embedded.")


@dg.asset(
    partitions_def=collection_run_partitions,
    deps=[item_features],
    group_name=ENRICHMENT,
    kinds={"postgres"},
    retry_policy=dg.RetryPolicy(max_retries=2, delay=5),
)
def item_embeddings(
    context: dg.AssetExecutionContext,
    config: ItemEmbeddingsConfig,
    postgres: PostgresResource,
    embedder: EmbedderResource,
) -> dg.MaterializeResult:
    """One vector per item of a collection run (pgvector, HNSW cosine index), tagged with the embedder's
    name and dimensions; items embedded by another backend are embedded again. Idempotent per run."""
    run_id = int(context.partition_key)
    result = embed_run(postgres.get_engine(), embedder.get_embedder(), run_id, force=config.force)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": dg.MetadataValue.int(result.embedded + result.already_embedded),
            "collection_run": dg.MetadataValue.int(run_id),
            "embedder": dg.MetadataValue.text(result.embedder),
            "dimensions": dg.MetadataValue.int(result.dimensions),
            "embedded": dg.MetadataValue.int(result.embedded),
            "already_embedded": dg.MetadataValue.int(result.already_embedded),
            "seconds": dg.MetadataValue.float(round(result.seconds, 3)),
            "items_per_second": dg.MetadataValue.float(round(result.embedded / max(result.seconds, 1e-9), 1)),
        }
    )


@dg.asset_check(
    asset=item_embeddings,
    description="Every vector comes from the configured embedder with its dimensions (others await re-embedding).",
)
def item_embeddings_one_space(postgres: PostgresResource, embedder: EmbedderResource) -> dg.AssetCheckResult:
    current = embedder.get_embedder()
    with postgres.get_engine().connect() as conn:
        rows = conn.execute(
            text("SELECT embedder, dimensions, count(*) AS n FROM item_embeddings GROUP BY 1, 2 ORDER BY 3 DESC")
        ).all()
    other = {f"{r.embedder} ({r.dimensions})": r.n for r in rows if (r.embedder, r.dimensions) != (current.name, current.dimensions)}
    return dg.AssetCheckResult(
        passed=not other,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"embedder": current.name, "vectors_of_other_embedders": dg.MetadataValue.json(other)},
        description=None if not other else "re-materialize item_embeddings for the affected collection runs",
    )


enrich_job = dg.define_asset_job(
    "enrich_collection_run",
    selection=dg.AssetSelection.assets(item_features, item_embeddings),
    partitions_def=collection_run_partitions,
    description="Features and embeddings of one collection run (a partition).",
)


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.SUCCESS,
    monitored_jobs=[ingest_job],
    request_job=enrich_job,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Enriches each collection run as soon as its ingestion run succeeds.",
)
def enrich_after_ingest(context: dg.RunStatusSensorContext):
    partition = context.dagster_run.tags.get("dagster/partition")
    if partition is None:
        return dg.SkipReason("the ingestion run had no partition")
    return dg.RunRequest(partition_key=partition, run_key=f"enrich-after-{context.dagster_run.run_id}")


defs = dg.Definitions(
    assets=[item_features, item_embeddings],
    asset_checks=[item_features_complete, item_embeddings_one_space],
    jobs=[enrich_job],
    sensors=[enrich_after_ingest],
)
