"""``observatory``: what Dagster itself does not do.

Start the embedded services, migrate, write demo data, create collection runs from feeds or files, ingest
completed runs through Dagster without a daemon, report run status, and run the whole demo. Each domain's
commands live in a module of this package; a command gets what it needs (settings, database, object store,
Dagster instance) from the lazy :class:`~observatory_assets.cli.context.Observatory`, closed when it ends.
"""

from __future__ import annotations

import sys
import warnings

import click

# Dagster's notices that an API we use is beta or preview are for developers, not for a person at the CLI.
warnings.filterwarnings("ignore", message=r".* is currently in (beta|preview)")

from observatory_assets.cli import (  # noqa: E402 (after the warning filter)
    actors,
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
from observatory_assets.cli.context import Observatory  # noqa: E402
from observatory_assets.defs.operations.backups import BackupError  # noqa: E402
from observatory_assets.lib.errors import one_line  # noqa: E402
from resources.settings import adopt_env_file  # noqa: E402

PROG = "observatory"


class _Observatory(click.Group):
    """The ``observatory`` group: its commands in the order the modules list them (the first steps first), and
    every failure a user can cause or meet (a bad option, a missing file, a bad value, a database or S3 server
    that is unreachable or refuses the keys, a schema to migrate) said in one line on stderr with exit code 2
    for a mistake in the input or configuration and 1 for a service; never a traceback."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        code = self._run(args, prog_name or PROG, complete_var, **extra)
        if standalone_mode:
            sys.exit(code)
        return code

    def _run(self, args, prog_name: str, complete_var, **extra) -> int:
        try:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra) or 0
        except click.UsageError as error:
            where = error.ctx.command_path if error.ctx else prog_name
            print(f"{where}: {_usage_line(error)} (see `{where} --help`)", file=sys.stderr)
            return 2
        except click.Abort:
            _say("aborted")
            return 1
        except click.ClickException as error:
            _say(error.format_message())
            return error.exit_code
        except Exception as error:
            described = one_line(error, reported=(BackupError,))
            if described is None:
                raise  # a bug, not a user's problem: the traceback is what a developer needs
            _say(described[0])
            return described[1]


HELP = """What Dagster itself does not do, for Observatory.

Start the embedded services, migrate, write demo data, create collection runs from feeds or files, ingest
them through Dagster without a daemon, report their status, and run the whole demo (`observatory demo`).
Shell completion for bash: eval "$(_OBSERVATORY_COMPLETE=bash_source observatory)".
"""


@click.group(cls=_Observatory, help=HELP,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})  # fmt: skip
@click.pass_context
def observatory(ctx: click.Context) -> None:
    adopt_env_file()
    ctx.obj = Observatory()
    ctx.call_on_close(ctx.obj.close)


for _module in (platform, ingestion, collection, demo, operations, exports, enrichment, trends, publishing, credits,
                webhooks, actors):  # fmt: skip
    for _command in _module.COMMANDS:
        observatory.add_command(_command)


def main(argv: list[str] | None = None) -> int:
    """Run one command (the ``observatory`` console script); its exit code."""
    return observatory.main(argv, standalone_mode=False)


def _usage_line(error: click.UsageError) -> str:
    """The first line of Click's message, lower-cased at the start and without the full stop, as our lines are."""
    if error.ctx is not None and error.message == error.ctx.get_help():
        return "a command is missing"  # a group called without one
    message = error.format_message().strip().splitlines()[0].rstrip(".")
    return message[:1].lower() + message[1:]


def _say(line: str) -> None:
    print(f"{PROG}: {line}", file=sys.stderr)
