"""The ``observatory`` command in this process, through Click's test runner: the same group, error handling and
exit codes as the console script, without a Python start-up per command."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from click.testing import CliRunner, Result

from observatory_assets.cli import observatory


def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    """Run ``observatory ARGS`` with ``env`` set (None: unset) for the command; a bug's exception propagates."""
    with kept_environment():
        return CliRunner().invoke(observatory, list(args), env=env, catch_exceptions=False, prog_name="observatory")


@contextmanager
def kept_environment() -> Iterator[None]:
    """The process environment as it was, afterwards: a command exports ``DAGSTER_HOME`` and adopts ``.env``."""
    saved = dict(os.environ)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def one_line_error(result: Result, code: int = 2) -> str:
    """The single stderr line of a command that failed with ``code``; never a traceback."""
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == code and len(lines) == 1, (result.exit_code, result.stdout, result.stderr)
    assert lines[0].startswith("observatory") and "Traceback" not in result.stderr
    return lines[0]
