"""Enrichment: what each loaded item is about, in a form Postgres and the clustering can use.

* ``item_features`` — per item of a collection run: the detected language and
  the detector's confidence (``py3langid``, a maintained langid.py fork), the
  text-search configuration of that language (``danish``, ``english``, …;
  ``simple`` when the language has none or the detector is not confident), the
  weighted full-text vector (title A, text B) and the search terms of the run's
  query design that occur in title or text (case- and accent-insensitive,
  whole words and phrases), and the item's sentiment (score, label, method; see
  ``enrichment/sentiment.py``).
* ``item_embeddings`` — one vector per item from the configured
  :class:`~observatory_assets.defs.enrichment.resources.EmbedderResource`, tagged with the
  embedder's name so a change of backend re-embeds instead of mixing spaces.

Both are partitioned like ``raw_items`` (one partition per collection run), run
in chunks of a few thousand items on a pool of connections (Python work of one
chunk overlaps the SQL of another) and are idempotent: every value is a pure
function of the item, written with UPDATE / upsert keyed on the item id.
"""

import time

import dagster as dg
from pydantic import Field

from observatory_assets.defs.enrichment.embeddings import embed_run, embed_runs_of_older_spaces
from observatory_assets.defs.enrichment.features import featurize_run
from observatory_assets.defs.enrichment.integrity import incomplete_features, vectors_of_other_spaces
from observatory_assets.defs.enrichment.language import DEFAULT_CONFIDENCE_FLOOR
from observatory_assets.defs.enrichment.resources import EmbedderResource
from observatory_assets.defs.enrichment.spaces import space_status
from observatory_assets.lib.dagster import (
    ENRICH_QUEUE,
    RunCheckVerdict,
    collection_run_check,
    collection_run_partitions,
    eager_or_never_done,
    worker_metadata,
)
from resources import PostgresResource

ENRICHMENT = "enrichment"


class ItemFeaturesConfig(dg.Config):
    confidence_floor: float = Field(
        default=DEFAULT_CONFIDENCE_FLOOR,
        description="Below this detector probability an item gets the 'simple' text-search configuration.",
    )


@dg.asset(
    partitions_def=collection_run_partitions,
    deps=["raw_items"],
    group_name=ENRICHMENT,
    kinds={"postgres"},
    retry_policy=dg.RetryPolicy(max_retries=2, delay=5),
    # a collection run's raw_items partition materialized by any run (or before the daemon ran): its features follow
    automation_condition=eager_or_never_done(),
    op_tags=ENRICH_QUEUE,
)
def item_features(
    context: dg.AssetExecutionContext, config: ItemFeaturesConfig, postgres: PostgresResource
) -> dg.MaterializeResult:
    """Language (with confidence), text-search configuration, full-text vector, matched query-design
    search terms and sentiment of every item of one collection run. Idempotent per run."""
    run_id = int(context.partition_key)
    result = featurize_run(postgres.get_engine(), run_id, confidence_floor=config.confidence_floor)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": result.items,
            "collection_run": run_id,
            "languages": result.languages,
            "text_search_configs": result.configs,
            "below_confidence_floor": result.low_confidence,
            "items_matching_search_terms": result.with_terms,
            "search_terms_matched": result.terms,
            "sentiment_labels": result.sentiment,
            "seconds": round(result.seconds, 3),
            "items_per_second": round(result.items / max(result.seconds, 1e-9), 1),
            **worker_metadata(),
        }
    )


def _features_complete(conn, run_id: int, _resources) -> RunCheckVerdict:
    found = incomplete_features(conn, run_id)
    return RunCheckVerdict(found["without_config_or_vector"] == 0, found)


item_features_complete = collection_run_check(
    item_features,
    "item_features_complete",
    "Every featurized item of the collection run has a text-search configuration and a full-text vector.",
    _features_complete,
)


class ItemEmbeddingsConfig(dg.Config):
    force: bool = Field(default=False, description="Embed every item of the run again, even if already embedded.")


@dg.asset(
    partitions_def=collection_run_partitions,
    deps=["raw_items", item_features],  # embeds the items' text, after their features (the spec's order)
    group_name=ENRICHMENT,
    kinds={"postgres"},
    retry_policy=dg.RetryPolicy(max_retries=2, delay=5),
    # requested on the same tick as the run's features, it runs after them in the same run
    automation_condition=eager_or_never_done(),
    op_tags=ENRICH_QUEUE,
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
    engine = postgres.get_engine()
    settled = embedder.settle_space(engine)
    current = embedder.get_embedder(engine)
    last_logged = [0.0]

    def progress(done: int, total: int) -> None:
        if time.monotonic() - last_logged[0] >= 30 or done == total:
            last_logged[0] = time.monotonic()
            context.log.info(f"{current.name}: embedded {done:,} of {total:,} items of collection run {run_id}")

    result = embed_run(engine, current, run_id, force=config.force, progress=progress)
    re_embedded = 0
    if settled:
        context.log.info(f"the archive outgrew its provisional space: every item is embedded again in {current.name}")
        re_embedded = embed_runs_of_older_spaces(engine, current)
    space = space_status(engine, current.space) if hasattr(current, "space") else {}
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": result.embedded + result.already_embedded,
            "collection_run": run_id,
            "embedder": result.embedder,
            "join_threshold": float(current.join_threshold),
            **space,
            "document_frequencies_counted": result.counted,
            "dimensions": result.dimensions,
            "embedded": result.embedded,
            "embedded_again_in_a_settled_space": re_embedded,
            "already_embedded": result.already_embedded,
            "seconds": round(result.seconds, 3),
            "items_per_second": round(result.embedded / max(result.seconds, 1e-9), 1),
            **worker_metadata(),
        }
    )


def _one_space(conn, run_id: int, resources) -> RunCheckVerdict:
    current = resources.embedder.get_embedder(resources.postgres.get_engine())
    other = vectors_of_other_spaces(conn, current.name, current.dimensions, run_id)
    return RunCheckVerdict(
        not other,
        {"embedder": current.name, "vectors_of_other_embedders": other},
        "re-materialize item_embeddings for the affected collection runs",
    )


item_embeddings_one_space = collection_run_check(
    item_embeddings,
    "item_embeddings_one_space",
    "Every vector of the collection run comes from the configured embedder with its dimensions.",
    _one_space,
    severity=dg.AssetCheckSeverity.WARN,
    resource_keys=frozenset({"embedder"}),
)
