"""Running the Alembic migrations that own the schema."""

from __future__ import annotations

from alembic import command
from alembic.config import Config

from resources.settings import PROJECT_ROOT


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
