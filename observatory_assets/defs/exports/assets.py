"""Dagster definitions of ``content_exports``, ``network_exports`` and ``volume_exports``."""

from typing import Any

import dagster as dg
from pydantic import Field

from observatory_assets.defs.exports.delivery import (
    CONTENT_FORMATS,
    EXPORTS,
    ExportResult,
    export_content,
    export_network,
    export_volumes,
    preview,
)
from observatory_assets.defs.exports.filters import ExportFilters, build_filters, filters_from
from observatory_assets.defs.exports.network import MAX_AUTHORS_PER_CONTEXT, PSEUDONYM_KEY_VARIABLE
from observatory_assets.defs.exports.volumes import VOLUME_FORMATS
from observatory_assets.lib.dagster import markdown_table, worker_metadata
from resources import ObjectStoreResource, PostgresResource
from resources.object_store import ObjectStore, download_metadata


class ExportFiltersConfig(dg.Config):
    """Which items to export; every field narrows the selection, empty means everything."""

    published_from: str | None = Field(default=None, description="ISO date or date-time, inclusive (UTC if no offset).")
    published_to: str | None = Field(default=None, description="ISO date or date-time, exclusive (UTC if no offset).")
    sources: list[str] = Field(default=[], description="Source names.")
    arenas: list[str] = Field(default=[], description="Arenas (a source's config 'arena', else its type).")
    languages: list[str] = Field(default=[], description="Language codes, e.g. 'da', 'en'.")
    query_designs: list[str] = Field(default=[], description="Query design names.")
    collection_runs: list[int] = Field(default=[], description="Collection run ids.")
    search_terms: list[str] = Field(default=[], description="Items that matched any of these search terms.")
    text_query: str | None = Field(default=None, description="Full-text query in web-search syntax.")

    def filters(self) -> ExportFilters:
        return filters_from(self)


class ContentExportsConfig(ExportFiltersConfig):
    formats: list[str] = Field(default=list(CONTENT_FORMATS), description="Any of csv, xlsx, ndjson, parquet.")
    include_metadata: bool = Field(default=False, description="Add the item's metadata as a JSON column.")


class NetworkExportsConfig(ExportFiltersConfig):
    pseudonymize: bool = Field(default=False, description=f"Authors as keyed pseudonyms ({PSEUDONYM_KEY_VARIABLE}).")
    dynamic: bool = Field(default=False, description="Add time spans to nodes and edges (Gephi timeline).")
    max_authors_per_context: int = Field(
        default=MAX_AUTHORS_PER_CONTEXT, description="Events or (run, term) pairs with more authors link nobody."
    )


class VolumeExportsConfig(dg.Config):
    """Which designs' daily volumes to export, over which days."""

    query_designs: list[str] = Field(description="Query design names (at least one).")
    published_from: str | None = Field(default=None, description="ISO date or date-time: days from this one (UTC).")
    published_to: str | None = Field(default=None, description="ISO date or date-time, exclusive: days before it.")
    formats: list[str] = Field(default=list(VOLUME_FORMATS), description="Any of csv, parquet.")


#: The check every export asset carries: its files are in object storage with the sizes written.
OBJECTS_STORED = "export_objects_stored"


def _objects_stored_spec(asset: str, files: str = "Every file is") -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(
        OBJECTS_STORED, asset=asset, description=f"{files} in object storage with the size that was written."
    )


def _stored_check(store: ObjectStore, results: list[ExportResult]) -> dg.AssetCheckResult:
    sizes = {r.format: store.size(r.object_key) for r in results}
    wrong = {r.format: {"stored": sizes[r.format], "written": r.size} for r in results if sizes[r.format] != r.size}
    return dg.AssetCheckResult(
        check_name=OBJECTS_STORED,
        passed=not wrong,
        metadata={"objects": len(results), "missing_or_wrong_size": wrong},
    )


@dg.asset(
    group_name=EXPORTS,
    deps=["raw_items", "item_features"],  # the items with their language and matched search terms
    kinds={"postgres", "csv", "parquet"},
    check_specs=[
        _objects_stored_spec("content_exports"),
        dg.AssetCheckSpec(
            "formats_agree",
            asset="content_exports",
            description="All formats of the export hold the same number of items (one snapshot).",
        ),
    ],  # fmt: skip
)
def content_exports(
    context: dg.AssetExecutionContext, config: ContentExportsConfig, postgres: PostgresResource,
    object_store: ObjectStoreResource,
) -> dg.MaterializeResult:  # fmt: skip
    """The filtered items as CSV (UTF-8 BOM), XLSX, NDJSON and Parquet files in object storage, with a
    download URL (S3, valid 1 hour) or path; takedown-removed items are never included. Configure
    filters and formats in the launchpad; each run writes `exports/<run id>/items.<ext>`."""
    filters = config.filters()
    engine, store = postgres.get_engine(), object_store.get_store()
    results = export_content(
        engine, store, filters, config.formats, request_id=context.run_id,
        include_metadata=config.include_metadata, actor=f"dagster:{context.run_id}",
    )  # fmt: skip
    counts = {r.format: r.record_count for r in results}
    metadata: dict[str, Any] = {
        "dagster/row_count": results[0].record_count,
        "filters": filters.as_json(),
        "record_counts": counts,
        "preview": dg.MetadataValue.md(markdown_table(preview(engine, filters))),
        **worker_metadata(),
    }
    for r in results:
        metadata[f"{r.format}_download"] = download_metadata(r.download_url)
        metadata[f"{r.format}_object_key"] = r.object_key
        metadata[f"{r.format}_sha256"] = r.sha256
        metadata[f"{r.format}_bytes"] = r.size
        metadata[f"{r.format}_seconds"] = round(r.seconds, 3)
        metadata[f"{r.format}_export_id"] = r.export_id
    return dg.MaterializeResult(
        metadata=metadata,
        check_results=[
            _stored_check(store, results),
            dg.AssetCheckResult(
                check_name="formats_agree", passed=len(set(counts.values())) == 1, metadata={"record_counts": counts}
            ),
        ],
    )


@dg.asset(
    group_name=EXPORTS,
    deps=["raw_items", "item_features", "events"],  # authors, matched search terms, shared events
    kinds={"postgres", "networkx"},
    check_specs=[
        _objects_stored_spec("network_exports", "The GEXF file is"),
        dg.AssetCheckSpec(
            "network_consistent",
            asset="network_exports",
            description="No self-loops, every weight at least 1, node posts add up to the posts used, "
            "and no author name is visible when pseudonymized.",
        ),
    ],  # fmt: skip
)
def network_exports(
    context: dg.AssetExecutionContext, config: NetworkExportsConfig, postgres: PostgresResource,
    object_store: ObjectStoreResource,
) -> dg.MaterializeResult:  # fmt: skip
    """A GEXF 1.3 actor co-occurrence network (authors joined by shared events, or by the same search
    term in the same collection run before events exist) for Gephi, in object storage with a
    download URL or path. Optional keyed pseudonyms and time spans."""
    import networkx as nx  # here, not with the module: every Dagster process loads the code location

    filters = config.filters()
    engine, store = postgres.get_engine(), object_store.get_store()
    result, graph = export_network(
        engine, store, filters, request_id=context.run_id, pseudonymize=config.pseudonymize,
        dynamic=config.dynamic, max_authors_per_context=config.max_authors_per_context,
        actor=f"dagster:{context.run_id}",
    )  # fmt: skip
    consistent = (
        nx.number_of_selfloops(graph) == 0
        and all(w >= 1 for _, _, w in graph.edges(data="weight"))
        and sum(p for _, p in graph.nodes(data="posts")) == result.details["posts"]
        and (not config.pseudonymize or all(str(n).startswith("actor-") for n in graph.nodes))
    )
    top = sorted(graph.degree(weight="weight"), key=lambda pair: (-pair[1], str(pair[0])))[:10]
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": result.details["nodes"],
            "filters": filters.as_json(),
            "gexf_download": download_metadata(result.download_url),
            "object_key": result.object_key,
            "sha256": result.sha256,
            "bytes": result.size,
            "export_id": result.export_id,
            "network": result.details,
            "top_actors_by_weighted_degree": dg.MetadataValue.md(
                markdown_table([{"actor": str(n), "weighted_degree": str(d)} for n, d in top])
            ),
            "seconds": round(result.seconds, 3),
            **worker_metadata(),
        },
        check_results=[
            _stored_check(store, [result]),
            dg.AssetCheckResult(check_name="network_consistent", passed=consistent, metadata=result.details),
        ],
    )


@dg.asset(
    group_name=EXPORTS,
    deps=["volume_stats"],
    kinds={"postgres", "csv", "parquet"},
    check_specs=[_objects_stored_spec("volume_exports")],
)
def volume_exports(
    context: dg.AssetExecutionContext, config: VolumeExportsConfig, postgres: PostgresResource,
    object_store: ObjectStoreResource,
) -> dg.MaterializeResult:  # fmt: skip
    """The daily volume statistics of query designs (``volume_stats``: items per day by platform, arena,
    source, language, matched term, sentiment label and actor) as CSV (UTF-8 BOM) and Parquet files in
    object storage, with a download URL or path; each run writes `exports/<run id>/volumes.<ext>`."""
    filters = build_filters(
        published_from=config.published_from, published_to=config.published_to, query_designs=config.query_designs
    )
    store = object_store.get_store()
    results = export_volumes(
        postgres.get_engine(), store, filters, config.formats, request_id=context.run_id,
        actor=f"dagster:{context.run_id}",
    )  # fmt: skip
    metadata: dict[str, Any] = {"dagster/row_count": results[0].record_count, "filters": filters.as_json()}
    for r in results:
        metadata[f"{r.format}_download"] = download_metadata(r.download_url)
        metadata[f"{r.format}_object_key"] = r.object_key
        metadata[f"{r.format}_sha256"] = r.sha256
        metadata[f"{r.format}_export_id"] = r.export_id
    return dg.MaterializeResult(metadata=metadata, check_results=[_stored_check(store, results)])
