"""``observatory services``, ``env``, ``migrate``, ``demo-data`` and ``config``."""

from __future__ import annotations

import sys
from pathlib import Path
from urllib.parse import urlsplit

import click

from observatory_assets.cli.context import Observatory, pass_observatory
from observatory_assets.defs.ingestion.demo_data import iter_items, write_demo_dataset, write_jsonl
from observatory_assets.lib import migrations
from resources.settings import configuration_markdown, described_settings, mask_dsn


@click.command("services")
@click.argument("action", type=click.Choice(["start", "stop", "status"]), default="status")
@pass_observatory
def services(obs: Observatory, action: str) -> int:
    """Start, stop or show the embedded services.

    ACTION is start, stop or status (the default)."""
    from resources.embedded import prepare_dagster_home, resolve_database_urls, stop_embedded_postgres

    settings = obs.settings
    if action == "stop":
        if settings.embedded_database:
            stopped = stop_embedded_postgres(settings.pgdata)
            click.echo("embedded Postgres stopped" if stopped else "embedded Postgres was not running")
        return 0
    app_url, dagster_url = resolve_database_urls(settings)
    if settings.embedded_database:  # what `make ui` starts must find the schema (a fresh home has none)
        migrations.ensure_current(app_url, embedded=True)
    home = prepare_dagster_home(settings)
    click.echo(f"database:        {mask_dsn(app_url)}")
    click.echo(f"dagster storage: {mask_dsn(dagster_url)}")
    click.echo(f"DAGSTER_HOME:    {home}")
    click.echo(f"objects:         {settings.objects_root if settings.embedded_object_store else settings.s3_endpoint}")
    return 0


@click.command("env")
@pass_observatory
def env(obs: Observatory) -> int:
    """Print the DAGSTER_HOME export for the dagster CLI.

    For a shell that runs the dagster CLI itself: eval "$(observatory env)"."""
    from resources.embedded import DAGSTER_URL_VARIABLE, prepare_dagster_home, resolve_database_urls

    click.echo(f"export DAGSTER_HOME={prepare_dagster_home(obs.settings)}")
    if urlsplit(resolve_database_urls(obs.settings)[1]).password:  # the password is not in dagster.yaml
        print(f"# the instance reads its storage URL (with a password) from ${DAGSTER_URL_VARIABLE}: "
              "export it (postgresql+psycopg2://…) for the dagster CLI", file=sys.stderr)  # fmt: skip
    return 0


@click.command("migrate")
@click.option("--revision", default="head", show_default=True, help="the Alembic revision to upgrade to")
@pass_observatory
def migrate(obs: Observatory, revision: str) -> int:
    """Alembic upgrade the application database."""
    from resources.embedded import resolve_database_urls

    url = resolve_database_urls(obs.settings)[0]
    migrations.upgrade(url, revision)
    click.echo(f"migrated {mask_dsn(url)} to {revision}")
    return 0


@click.command("demo-data")
@click.option("--out", default="demo_data", show_default=True, help="directory (dataset) or file (--n)")
@click.option("--n", type=click.IntRange(min=0), default=0, help="write N benchmark items as one JSONL file")
@click.option("--seed", type=int, default=7, show_default=True, help="the generator's seed")
def demo_data(out: str, n: int, seed: int) -> int:
    """Write the demo dataset, or --n generated JSONL items."""
    target = Path(out)
    if n:
        target.parent.mkdir(parents=True, exist_ok=True)
        count = write_jsonl(target, iter_items(n, seed=seed))
        click.echo(f"wrote {count} items to {target}")
    else:
        for name, fmt, path in write_demo_dataset(target, seed=seed):
            click.echo(f"{name:15} {fmt:6} {path}")
    return 0


@click.command("config")
@click.option("--markdown", is_flag=True, help="print the settings reference (docs/configuration.md)")
def config(markdown: bool) -> int:
    """List every OBSERVATORY_* setting, its source and its meaning.

    Secrets show only as (set), database URLs with the password masked; a bad value is one line instead."""
    if markdown:
        click.echo(configuration_markdown(), nl=False)
        return 0
    rows = described_settings()
    width = max(len(name) for name, *_ in rows)
    for name, value, source, meaning in rows:
        click.echo(f"{name:{width}}  {value:30}  {source:7}  {meaning}")
    return 0


COMMANDS = (services, env, migrate, demo_data, config)
