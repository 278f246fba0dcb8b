"""``observatory actors list | show`` and ``observatory stats DESIGN --by …``."""

from __future__ import annotations

import json
from collections import defaultdict

import click

from observatory_assets.cli.context import UTC_DAY, Observatory, json_option, pass_observatory
from observatory_assets.defs.actors.analysis import DIMENSIONS, volume_rows
from observatory_assets.defs.actors.catalog import actor_rows


@click.group("actors")
def actors() -> None:
    """Actors (sources/actors/ YAML, synced by `observatory sources sync`) and their items."""


@actors.command("list")
@json_option("one JSON object per actor")
@pass_observatory
def list_actors(obs: Observatory, as_json: bool) -> int:
    """Every actor, its presences and its item counts.

    Kind, public figure or not, accounts, and how many items each wrote or is mentioned in."""
    with obs.engine.connect() as conn:
        rows = actor_rows(conn)
    if as_json:
        for row in rows:
            click.echo(json.dumps(row.as_json(), ensure_ascii=False))
        return 0
    for row in rows:
        where = ", ".join(f"{p['platform']}:{p['handle']}" for p in row.presences) or "-"
        public = "public" if row.public_figure else "private"
        click.echo(f"{row.name:28} {row.kind:12} {public:7} {row.authored_items:>6} authored "
                   f"{row.mentioned_in:>6} mentions  {where}")  # fmt: skip
    if not rows:
        click.echo("no actors: write sources/actors/*.yaml and run `observatory sources sync`")
    return 0


@actors.command("show")
@click.argument("name")
@pass_observatory
def show_actor(obs: Observatory, name: str) -> int:
    """One actor's catalog entry and counts (JSON)."""
    with obs.engine.connect() as conn:
        rows = actor_rows(conn, name)
    if not rows:
        raise ValueError(f"no actor named {name!r} (see `observatory actors list`)")
    click.echo(json.dumps(rows[0].as_json(), ensure_ascii=False, indent=2))
    return 0


@click.command("stats")
@click.argument("design")
@click.option("--by", "by", type=click.Choice(DIMENSIONS), default="platform", show_default=True,
              help="the dimension to count along")  # fmt: skip
@click.option("--from", "since", type=UTC_DAY, help="first UTC day (default: the first counted)")
@click.option("--to", "until", type=UTC_DAY, help="last UTC day (default: the last counted)")
@json_option("one JSON object per day and value")
@pass_observatory
def stats(obs: Observatory, design: str, by: str, since, until, as_json: bool) -> int:
    """Daily items of a design along one dimension.

    As the volume_stats asset counted them (platform, arena, source, language, term, sentiment or actor)."""
    with obs.engine.connect() as conn:
        rows = volume_rows(conn, design, by, since, until)
    if as_json:
        for row in rows:
            click.echo(json.dumps({"day": row.day.isoformat(), "design": row.design, "by": by, "value": row.value,
                                   "items": row.items}, ensure_ascii=False))  # fmt: skip
        return 0
    if not rows:
        click.echo(
            f"no volumes for {design!r} by {by}: materialize volume_stats (the daemon does) or widen --from/--to"
        )
        return 0
    per_day: dict = defaultdict(dict)
    for row in rows:
        per_day[row.day][row.value] = row.items
    values = sorted({row.value for row in rows}, key=lambda v: -sum(d.get(v, 0) for d in per_day.values()))[:8]
    click.echo("day         " + " ".join(f"{v[:12]:>12}" for v in values))
    for day, counts in sorted(per_day.items()):
        click.echo(f"{day}  " + " ".join(f"{counts.get(v, 0):>12}" for v in values))
    return 0


COMMANDS = (actors, stats)
