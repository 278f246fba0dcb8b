"""``observatory``: what Dagster itself does not do.

Start the embedded services, migrate, write demo data, create collection runs
from feeds or files, ingest completed runs through Dagster without a daemon,
report run status, and run the whole demo. Each domain adds its own commands
through ``register_commands(subparsers)`` in a module of this package.
"""

from __future__ import annotations

import argparse
import sys
import warnings

# Dagster's notices that an API we use is beta or preview are for developers, not for a person at the CLI.
warnings.filterwarnings("ignore", message=r".* is currently in (beta|preview)")

from observatory_assets.cli import (  # noqa: E402 (after the warning filter)
    collection,
    credits,
    demo,
    enrichment,
    exports,
    ingestion,
    operations,
    platform,
    publishing,
    trends,
    webhooks,
)
from observatory_assets.lib.errors import failure_message  # noqa: E402
from resources.settings import adopt_env_file  # noqa: E402

#: Command modules, in the order their commands appear in ``observatory --help``.
COMMAND_MODULES = (
    platform,
    ingestion,
    collection,
    demo,
    operations,
    exports,
    enrichment,
    trends,
    publishing,
    credits,
    webhooks,
)


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage mistake said in one line (its subcommands' parsers are of this class too)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="observatory", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for module in COMMAND_MODULES:
        module.register_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command. Whatever a user can cause or meet (a missing file, a bad value, a database or
    S3 server that is unreachable or refuses the keys, a schema to migrate) ends in one line on
    stderr and a non-zero exit: 2 for a mistake in the input or configuration, 1 for a service."""
    args = build_parser().parse_args(argv)
    try:
        adopt_env_file()
        return args.func(args)
    except Exception as error:
        message, code = _one_line(error)
        if message is None:
            raise  # a bug, not a user's problem: the traceback is what a developer needs
        print(f"observatory: {failure_message(message)}", file=sys.stderr)
        return code


def _one_line(error: Exception) -> tuple[str | None, int]:
    """(the one line a user reads for ``error``, the exit code); no line for an unexpected error."""
    import psycopg
    import sqlalchemy.exc
    import urllib3.exceptions
    from minio.error import MinioException, S3Error

    from observatory_assets.defs.operations.backups import BackupError
    from observatory_assets.lib.migrations import SchemaNotCurrentError
    from resources.outbound import OutboundError
    from resources.postgres import UnsupportedServerError

    def first_line(text: object) -> str:
        return next((line.strip() for line in str(text).splitlines() if line.strip()), type(error).__name__)

    if isinstance(error, SchemaNotCurrentError | BackupError | UnsupportedServerError):
        return str(error), 1
    if isinstance(error, sqlalchemy.exc.OperationalError | sqlalchemy.exc.InterfaceError | psycopg.OperationalError):
        cause = getattr(error, "orig", None) or error
        return f"the database is unreachable or refused the connection: {first_line(cause)}", 1
    if isinstance(error, S3Error):
        hint = (
            " (check OBSERVATORY_S3_ACCESS_KEY and OBSERVATORY_S3_SECRET_KEY)" if error.code in _S3_KEY_ERRORS else ""
        )
        return f"object storage refused the request: {error.code}: {error.message}{hint}", 1
    if isinstance(error, urllib3.exceptions.HTTPError | MinioException):
        reason = getattr(error, "reason", None) or error
        return f"object storage is unreachable: {first_line(reason)}", 1
    if isinstance(error, FileNotFoundError):
        return f"no such file: {error.filename or first_line(error)}", 2
    if isinstance(error, OSError):
        return first_line(f"{error.strerror or error}: {error.filename}" if error.filename else error), 1
    if isinstance(error, ValueError):
        return first_line(error), 2
    if isinstance(error, OutboundError):
        return first_line(error), 1
    return None, 1


#: S3 error codes that mean the keys are wrong or not allowed.
_S3_KEY_ERRORS = {"SignatureDoesNotMatch", "InvalidAccessKeyId", "AccessDenied", "InvalidToken"}
