"""Running the Alembic migrations that own the schema, and checking a database is at the code's revision."""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from resources.postgres import engine_for
from resources.settings import PROJECT_ROOT, mask_dsn


class SchemaNotCurrentError(RuntimeError):
    """An external database has no schema, or an older one than the code: someone must migrate it."""


def alembic_config(url: str) -> Config:
    """The project's Alembic configuration bound to ``url``."""
    config = Config(str(PROJECT_ROOT / "alembic.ini"))
    config.attributes["url"] = url
    config.attributes["configure_logging"] = False
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Migrate the database at ``url`` up to ``revision``."""
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str = "base") -> None:
    """Migrate the database at ``url`` down to ``revision``."""
    command.downgrade(alembic_config(url), revision)


def revisions(url: str) -> tuple[str | None, str | None]:
    """(the database's schema revision, None when it has none; the code's head revision)."""
    head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
    with engine_for(url).connect() as conn:
        return MigrationContext.configure(conn).get_current_revision(), head


_CURRENT: set[str] = set()


def ensure_current(url: str, embedded: bool) -> None:
    """Make sure the database at ``url`` has the code's schema before a command uses it: the embedded
    database is migrated on first use (a fresh ``OBSERVATORY_HOME``); an external one is never changed
    behind its operator's back, a :class:`SchemaNotCurrentError` says which command to run."""
    if url in _CURRENT:
        return
    current, head = revisions(url)
    if current != head:
        if not embedded:
            state = "has no Observatory schema" if current is None else f"is at schema revision {current}"
            raise SchemaNotCurrentError(
                f"the database {mask_dsn(url)} {state}, this code needs {head}: run `observatory migrate`"
            )
        upgrade(url)
    _CURRENT.add(url)
