"""What every command shares: the lazy :class:`Observatory` context, the ``UTC_DAY`` parameter type and the
``--json`` and ``--limit`` options."""

from __future__ import annotations

from datetime import date
from functools import cached_property

import click

from observatory_assets.lib import migrations
from resources import observatory_resources
from resources.embedded import prepare_dagster_home
from resources.settings import platform_settings


class Observatory:
    """The settings, database engine, object store and Dagster instance of one command, each made on first
    use (a command that needs no database starts none) and closed when the command ends. The database is at
    the code's schema before a command sees the engine (the embedded one is migrated on first use)."""

    def __init__(self) -> None:
        self._instance = None

    @cached_property
    def settings(self):
        """The ``OBSERVATORY_*`` settings (a bad value is the user's one-line mistake)."""
        return platform_settings()

    @cached_property
    def _resources(self) -> dict:
        resources = {
            name: r.process_config_and_initialize() for name, r in observatory_resources(self.settings).items()
        }
        postgres = resources["postgres"]
        migrations.ensure_current(postgres.resolved_url(), embedded=not postgres.url)
        return resources

    @cached_property
    def engine(self):
        """The application database's engine, configured as the Dagster resource is."""
        return self._resources["postgres"].get_engine()

    @cached_property
    def store(self):
        """The object store, configured as the Dagster resource is."""
        return self._resources["object_store"].get_store()

    @property
    def instance(self):
        """The Dagster instance of ``DAGSTER_HOME`` (the managed one, written on first use), where the
        command's runs are recorded as the daemon's are."""
        if self._instance is None:
            import dagster as dg

            prepare_dagster_home(self.settings)
            self._instance = dg.DagsterInstance.get()
        return self._instance

    def close(self) -> None:
        """Dispose of what the command opened."""
        if self._instance is not None:
            self._instance.dispose()
            self._instance = None
        if "engine" in self.__dict__:
            self.engine.dispose()


#: Passes the command's :class:`Observatory` as its first argument.
pass_observatory = click.make_pass_decorator(Observatory, ensure=True)


class UtcDay(click.ParamType):
    """A UTC calendar day, written ``YYYY-MM-DD``."""

    name = "YYYY-MM-DD"

    def convert(self, value, param, ctx) -> date:
        if isinstance(value, date):
            return value
        try:
            return date.fromisoformat(value)
        except ValueError:
            self.fail(f"not a date (YYYY-MM-DD): {value!r}", param, ctx)


UTC_DAY = UtcDay()


def json_option(help_text: str = "machine-readable JSON"):
    """``--json``: the command's output as JSON (a stable shape for scripts)."""
    return click.option("--json", "as_json", is_flag=True, help=help_text)


def limit_option(default: int, help_text: str = "show at most this many"):
    """``--limit N``: at most N rows (N >= 1)."""
    return click.option(
        "--limit", type=click.IntRange(min=1), default=default, show_default=True, metavar="N", help=help_text
    )
