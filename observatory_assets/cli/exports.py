"""``observatory export items | network | volumes | list``."""

from __future__ import annotations

import json

import click

from observatory_assets.cli.context import Observatory, limit_option, pass_observatory
from observatory_assets.defs.exports.delivery import (
    CONTENT_FORMATS,
    ExportResult,
    export_content,
    export_network,
    export_volumes,
    recent_exports,
)
from observatory_assets.defs.exports.filters import FILTER_FIELDS, build_filters
from observatory_assets.defs.exports.network import MAX_AUTHORS_PER_CONTEXT, PSEUDONYM_KEY_VARIABLE
from observatory_assets.defs.exports.volumes import VOLUME_FILTERS, VOLUME_FORMATS

#: The selection options of both exports: (flags, parameter name, what click.option adds).
_FILTERS = (
    ("--from", "published_from", {"help": "published at or after (ISO date/date-time, UTC)"}),
    ("--to", "published_to", {"help": "published before (ISO date/date-time, UTC)"}),
    ("--source", "sources", {"multiple": True, "help": "source name (repeatable)"}),
    ("--arena", "arenas", {"multiple": True, "help": "arena (repeatable)"}),
    ("--language", "languages", {"multiple": True, "help": "language code (repeatable)"}),
    ("--query-design", "query_designs", {"multiple": True, "help": "query design name (repeatable)"}),
    ("--run", "collection_runs", {"multiple": True, "type": int, "help": "collection run id (repeatable)"}),
    ("--term", "search_terms", {"multiple": True, "help": "matched search term (repeatable)"}),
    ("--query", "text_query", {"help": "full-text query (web-search syntax)"}),
)


def selection_options(command, names: tuple[str, ...] = FILTER_FIELDS):
    """The filters ``names`` that select what an export holds, and ``--request-id``."""
    command = click.option("--request-id", help="reuse to replace an earlier export's files (default: a new id)")(
        command
    )
    for flag, name, extra in reversed(_FILTERS):
        if name in names:
            command = click.option(flag, name, **extra)(command)
    return command


def volume_selection_options(command):
    """The query designs and date range of a volume export, and ``--request-id``."""
    return selection_options(command, VOLUME_FILTERS)


def _filters(params: dict):
    return build_filters(**{name: params.pop(name) for name in FILTER_FIELDS if name in params})


def _print_results(results: list[ExportResult]) -> None:
    for r in results:
        click.echo(json.dumps({
            "export_id": r.export_id, "format": r.format, "records": r.record_count, "bytes": r.size,
            "sha256": r.sha256, "object_key": r.object_key, "download": r.download_url, **r.details,
        }, ensure_ascii=False))  # fmt: skip


@click.group("export")
def export() -> None:
    """Export items (CSV, XLSX, NDJSON, Parquet), a GEXF network or daily volumes (CSV, Parquet)."""


@export.command("items")
@click.option("--format", "formats", multiple=True, type=click.Choice(CONTENT_FORMATS),
              help="repeatable; default: all four")  # fmt: skip
@click.option("--metadata", is_flag=True, help="add the metadata JSON column")
@selection_options
@pass_observatory
def items(obs: Observatory, formats: tuple[str, ...], metadata: bool, request_id: str | None, **selection) -> int:
    """The filtered items as files in object storage.

    Prints one JSON line per file: its export id, format, records, bytes, SHA-256, key and link."""
    filters = _filters(selection)
    results = export_content(
        obs.engine, obs.store, filters, list(formats) or CONTENT_FORMATS, request_id=request_id,
        include_metadata=metadata, actor="cli",
    )  # fmt: skip
    _print_results(results)
    return 0


@export.command("network")
@click.option("--pseudonymize", is_flag=True, help=f"keyed pseudonyms ({PSEUDONYM_KEY_VARIABLE})")
@click.option("--dynamic", is_flag=True, help="time spans on nodes and edges")
@click.option("--max-authors-per-context", type=click.IntRange(min=1), default=MAX_AUTHORS_PER_CONTEXT,
              show_default=True, help="a context (run and term, or event) with more authors links nobody")  # fmt: skip
@selection_options
@pass_observatory
def network(obs: Observatory, pseudonymize: bool, dynamic: bool, max_authors_per_context: int,
            request_id: str | None, **selection) -> int:  # fmt: skip
    """The actor co-occurrence network as GEXF 1.3."""
    filters = _filters(selection)
    result, _ = export_network(
        obs.engine, obs.store, filters, request_id=request_id, pseudonymize=pseudonymize,
        dynamic=dynamic, max_authors_per_context=max_authors_per_context, actor="cli",
    )  # fmt: skip
    _print_results([result])
    return 0


@export.command("volumes")
@click.option("--format", "formats", multiple=True, type=click.Choice(VOLUME_FORMATS),
              help="repeatable; default: both")  # fmt: skip
@volume_selection_options
@pass_observatory
def volumes(obs: Observatory, formats: tuple[str, ...], request_id: str | None, **selection) -> int:
    """Daily volumes of designs as CSV and Parquet.

    One row per day, design, dimension and value with its items; --from/--to select the days as for items.
    Prints one JSON line per file."""
    filters = _filters(selection)
    results = export_volumes(obs.engine, obs.store, filters, list(formats) or VOLUME_FORMATS, request_id=request_id)
    _print_results(results)
    return 0


@export.command("list")
@limit_option(20, "at most this many exports")
@pass_observatory
def list_exports(obs: Observatory, limit: int) -> int:
    """Recent exports, newest first."""
    with obs.engine.connect() as conn:
        rows = recent_exports(conn, limit)
    for row in rows:
        records = row.record_count if row.record_count is not None else "-"
        click.echo(f"{row.id:>6} {row.kind:8} {row.format:8} {row.status:10} {records:>9} {row.created_at:%Y-%m-%d %H:%M} "
                   f"{row.object_key}")  # fmt: skip
    return 0


COMMANDS = (export,)
