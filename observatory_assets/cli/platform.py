"""``observatory services``, ``env``, ``migrate``, ``config`` and ``demo-data``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from observatory_assets.defs.ingestion.demo_data import iter_items, write_demo_dataset, write_jsonl
from observatory_assets.lib import migrations
from resources.settings import configuration_markdown, described_settings, mask_dsn, platform_settings


def cmd_services(args: argparse.Namespace) -> int:
    from resources.embedded import prepare_dagster_home, resolve_database_urls, stop_embedded_postgres

    settings = platform_settings()
    if args.action == "stop":
        if settings.embedded_database:
            stopped = stop_embedded_postgres(settings.pgdata)
            print("embedded Postgres stopped" if stopped else "embedded Postgres was not running")
        return 0
    app_url, dagster_url = resolve_database_urls(settings)
    if settings.embedded_database:  # what `make ui` starts must find the schema (a fresh home has none)
        migrations.ensure_current(app_url, embedded=True)
    home = prepare_dagster_home(settings)
    print(f"database:        {mask_dsn(app_url)}")
    print(f"dagster storage: {mask_dsn(dagster_url)}")
    print(f"DAGSTER_HOME:    {home}")
    print(f"objects:         {settings.objects_root if settings.embedded_object_store else settings.s3_endpoint}")
    return 0


def cmd_env(args: argparse.Namespace) -> int:
    """Print `export DAGSTER_HOME=...` for shells that run the dagster CLI directly."""
    from sqlalchemy.engine import make_url

    from resources.embedded import DAGSTER_URL_VARIABLE, prepare_dagster_home, resolve_database_urls

    print(f"export DAGSTER_HOME={prepare_dagster_home()}")
    if make_url(resolve_database_urls()[1]).password:  # the password is not in dagster.yaml
        print(f"# the instance reads its storage URL (with a password) from ${DAGSTER_URL_VARIABLE}: "
              "export it (postgresql+psycopg2://…) for the dagster CLI", file=sys.stderr)  # fmt: skip
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from resources.embedded import resolve_database_urls

    url = resolve_database_urls()[0]
    migrations.upgrade(url, args.revision)
    print(f"migrated {mask_dsn(url)} to {args.revision}")
    return 0


def cmd_demo_data(args: argparse.Namespace) -> int:

    out = Path(args.out)
    if args.n:
        out.parent.mkdir(parents=True, exist_ok=True)
        count = write_jsonl(out, iter_items(args.n, seed=args.seed))
        print(f"wrote {count} items to {out}")
    else:
        for name, fmt, path in write_demo_dataset(out, seed=args.seed):
            print(f"{name:15} {fmt:6} {path}")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    """Every setting: its value here (secrets only as ``(set)``, database URLs with the password masked),
    where it came from (env, file or default) and what it means; a bad value is one line instead.
    With ``--markdown``, the settings reference (``docs/configuration.md``) instead."""
    if args.markdown:
        print(configuration_markdown(), end="")
        return 0
    rows = described_settings()
    width = max(len(name) for name, *_ in rows)
    for name, value, source, meaning in rows:
        print(f"{name:{width}}  {value:30}  {source:7}  {meaning}")
    return 0


def register_commands(sub) -> None:
    """``observatory services``, ``env``, ``migrate``, ``demo-data`` and ``config``."""
    services = sub.add_parser("services", help="start, stop or show the embedded services")
    services.add_argument("action", choices=["start", "stop", "status"], nargs="?", default="status")
    services.set_defaults(func=cmd_services)

    sub.add_parser("env", help="print the DAGSTER_HOME export for the dagster CLI").set_defaults(func=cmd_env)

    migrate = sub.add_parser("migrate", help="alembic upgrade the application database")
    migrate.add_argument("--revision", default="head")
    migrate.set_defaults(func=cmd_migrate)

    demo_data = sub.add_parser("demo-data", help="write the demo dataset, or --n generated JSONL items")
    demo_data.add_argument("--out", default="demo_data", help="directory (dataset) or file (--n)")
    demo_data.add_argument("--n", type=int, default=0, help="write N benchmark items as one JSONL file")
    demo_data.add_argument("--seed", type=int, default=7)
    demo_data.set_defaults(func=cmd_demo_data)

    config = sub.add_parser("config", help="list every OBSERVATORY_* setting, its source and its meaning")
    config.add_argument("--markdown", action="store_true", help="print the settings reference (docs/configuration.md)")
    config.set_defaults(func=cmd_config)
