"""``observatory``: what Dagster itself does not do.

Start the embedded services, migrate, write demo data, create collection runs
from feeds or files, ingest completed runs through Dagster without a daemon,
report run status, and run the whole demo. Each domain adds its own commands
through ``register_commands(subparsers)`` in a module of this package.
"""

from __future__ import annotations

import argparse
import sys

from observatory_assets.cli import demo, enrichment, exports, ingestion, operations, platform, trends

#: Command modules, in the order their commands appear in ``observatory --help``.
COMMAND_MODULES = (platform, ingestion, demo, operations, exports, enrichment, trends)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="observatory", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for module in COMMAND_MODULES:
        module.register_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as error:
        print(f"observatory: {error}", file=sys.stderr)
        return 2
