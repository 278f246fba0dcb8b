"""``observatory sources sync | list | show | poll | set-credibility`` and ``observatory designs list``."""

from __future__ import annotations

import json

import click

from observatory_assets.cli.context import Observatory, json_option, pass_observatory
from observatory_assets.cli.runner import run_job
from observatory_assets.cli.trends import set_credibility
from observatory_assets.defs.actors.catalog import ActorSync, load_actor_catalog
from observatory_assets.defs.actors.feeds import with_actor_feeds
from observatory_assets.defs.actors.linking import sync_actors
from observatory_assets.defs.collection.catalog import (
    CatalogSync,
    design_states,
    load_catalog,
    source_states,
    sources_dir,
    sync_catalog,
)
from resources.embedded import author_pseudonym_key
from resources.settings import platform_settings

LISTED = (
    "name", "platform", "url", "active", "etag", "last_modified", "last_status", "last_checked_at", "next_check_at",
    "error_count", "last_error",
)  # fmt: skip


def sync_sources(engine, directory: str | None = None) -> tuple[CatalogSync, ActorSync]:
    """Load and sync the catalog in ``directory`` (default ``OBSERVATORY_SOURCES_DIR``): sources, designs (with
    the feeds of the actors they follow) and the actors of its ``actors/`` folder (their changed entries
    relinked), in one transaction; what changed."""
    folder = sources_dir(directory)
    actors = load_actor_catalog(folder)
    catalog = with_actor_feeds(load_catalog(folder), actors, platform_settings())
    design_lists = {name: spec.actor_lists for name, (_, spec) in catalog.designs.items()}
    with engine.begin() as conn:
        return sync_catalog(conn, catalog), sync_actors(conn, actors, author_pseudonym_key, design_lists)


@click.group("sources")
def sources() -> None:
    """The source catalog (sources/ YAML) and its polling."""


@sources.command("sync")
@click.option("--dir", "directory", help="catalog directory (default OBSERVATORY_SOURCES_DIR or ./sources)")
@pass_observatory
def sync(obs: Observatory, directory: str | None) -> int:
    """Load the catalog into the database, idempotently.

    Sources, query designs and actors (sources/actors/*.yaml); a source no longer in the catalog is
    deactivated, an actor no longer in it is removed with its links."""
    result, actors = sync_sources(obs.engine, directory)
    click.echo(f"{result.sources} sources and {result.designs} designs synced from {sources_dir(directory)}")
    if actors.actors or actors.lists:
        click.echo(f"{actors.actors} actors in {actors.lists} lists synced from its actors/ folder")
    if result.deactivated:
        click.echo(f"deactivated (no longer in the catalog): {', '.join(result.deactivated)}")
    if actors.changed or actors.removed:
        click.echo(f"actors changed: {len(actors.changed)} (their items linked again), removed: {len(actors.removed)}")
    return 0


@sources.command("list")
@json_option("one JSON object per source")
@pass_observatory
def list_sources(obs: Observatory, as_json: bool) -> int:
    """Every catalog source with its polling state."""
    with obs.engine.connect() as conn:
        states = source_states(conn)
    if as_json:
        for state in states:
            click.echo(json.dumps({key: state[key] for key in LISTED}, ensure_ascii=False))
        return 0
    for s in states:
        errors = f"  {s['error_count']} errors: {s['last_error']}" if s["error_count"] else ""
        click.echo(f"{s['name']:24} {s['platform']:9} {'active' if s['active'] else 'inactive':8} "
                   f"{s['last_status'] or '-'!s:4} next {s['next_check_at'] or 'now'}{errors}")  # fmt: skip
    if not states:
        click.echo("no sources: write a catalog in sources/ and run `observatory sources sync`")
    return 0


@sources.command("show")
@click.argument("name")
@pass_observatory
def show(obs: Observatory, name: str) -> int:
    """One source's catalog fields and polling state (JSON)."""
    with obs.engine.connect() as conn:
        states = source_states(conn, name)
    if not states:
        raise ValueError(f"no catalog source named {name!r} (see `observatory sources list`)")
    click.echo(json.dumps(states[0], ensure_ascii=False, indent=2))
    return 0


def poll_once(obs: Observatory, force: bool) -> dict:
    """One polling cycle, in-process through Dagster and recorded in its instance; the run's outcome with
    the cycle's report as ``output``."""
    obs.engine  # noqa: B018 (the database at the code's schema before the run starts)
    return run_job(
        obs.instance, "poll_sources_job", ops_config={"poll_sources": {"force": force}}, output_of="poll_sources"
    )


@sources.command("poll")
@click.option("--now", is_flag=True, help="treat every active source as due (not a host's Retry-After)")
@pass_observatory
def poll(obs: Observatory, now: bool) -> int:
    """One polling cycle now, in-process through Dagster."""
    outcome = poll_once(obs, now)
    if not outcome["success"]:
        click.echo(f"observatory: polling failed: {outcome['error']}", err=True)
        return 1
    report = outcome["output"]
    click.echo(
        f"{report['due']} sources due: {report['requests_sent']} requests, {report['not_modified']} not modified (304), "
        f"{report['changed']} changed, {report['errors']} errors; {report['items_collected']} items collected"
    )
    for design, run_id in report["runs"].items():
        click.echo(f"  collection run {run_id} for {design}")
    for reason in report["shortfalls"]:
        click.echo(f"  skipped: {reason}")
    return 0


sources.add_command(set_credibility)


@click.group("designs")
def designs() -> None:
    """Query designs (from the sources/ catalog)."""


@designs.command("list")
@json_option("one JSON object per design")
@pass_observatory
def list_designs(obs: Observatory, as_json: bool) -> int:
    """Every query design."""
    with obs.engine.connect() as conn:
        found = design_states(conn)
    for design in found:
        if as_json:
            click.echo(json.dumps(design, ensure_ascii=False))
        else:
            budget = "no budget" if design["budget"] is None else f"budget {design['budget']:g}"
            click.echo(f"{design['name']:24} {design['title']} — {len(design['sources'])} sources, {budget}")
    return 0


COMMANDS = (sources, designs)
