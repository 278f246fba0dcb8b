"""Observatory needs PostgreSQL 18 (``RETURNING old.* / new.*``): an older server is refused on connect,
with one line that names both versions."""

import pytest
from sqlalchemy import text

from observatory_assets.cli import main
from resources import postgres
from resources.postgres import UnsupportedServerError, engine_for


def _fresh(database_url: str, name: str) -> str:
    """The test database's URL, spelled so that it gets an engine (and a pool) of its own."""
    return f"{database_url}{'&' if '?' in database_url else '?'}application_name={name}"


@pytest.fixture
def needs_a_newer_server(monkeypatch) -> None:
    """The embedded server is PostgreSQL 18: demanding 19 makes it the too-old server."""
    monkeypatch.setattr(postgres, "MINIMUM_SERVER_VERSION", 190000)


def test_the_embedded_server_is_new_enough(engine):
    with engine.connect() as conn:
        assert conn.execute(text("SHOW server_version_num")).scalar_one() >= str(postgres.MINIMUM_SERVER_VERSION)


def test_an_older_server_is_refused_on_connect(database_url, needs_a_newer_server):
    engine = engine_for(_fresh(database_url, "version-check"))
    with pytest.raises(
        UnsupportedServerError, match=r"runs PostgreSQL 18\.\d+; Observatory needs PostgreSQL 19 or later"
    ):
        engine.connect()
    engine.dispose()


def test_the_cli_says_so_in_one_line(database_url, needs_a_newer_server, monkeypatch, capsys):
    monkeypatch.setenv("OBSERVATORY_DATABASE_URL", _fresh(database_url, "version-cli"))
    assert main(["status"]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("observatory: ") and "needs PostgreSQL 19 or later" in lines[0]
