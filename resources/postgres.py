"""The application database: SQLAlchemy 2 engines on psycopg 3."""

from __future__ import annotations

import threading
from collections import OrderedDict
from functools import lru_cache

import dagster as dg
import psycopg
from psycopg import sql
from pydantic import Field
from sqlalchemy import Engine, create_engine, event

from resources.embedded import database_url_in
from resources.settings import as_libpq_dsn, as_psycopg_url, mask_dsn

#: The oldest server the schema runs on: it uses PostgreSQL 18's ``RETURNING old.* / new.*``.
MINIMUM_SERVER_VERSION = 180000


class UnsupportedServerError(RuntimeError):
    """The database server is older than the schema needs."""


def require_supported_server(dbapi_connection: psycopg.Connection, *_: object) -> None:
    """Refuse (closing it) a connection to a server older than :data:`MINIMUM_SERVER_VERSION`, in one line."""
    version = dbapi_connection.info.server_version
    if version < MINIMUM_SERVER_VERSION:
        where = f"{dbapi_connection.info.host}:{dbapi_connection.info.port}"
        dbapi_connection.close()
        raise UnsupportedServerError(
            f"the database server at {where} runs PostgreSQL {version // 10000}.{version % 10000}; "
            f"Observatory needs PostgreSQL {MINIMUM_SERVER_VERSION // 10000} or later"
        )


#: Engines kept per process, the most recently used first out last; an engine pushed out is disposed.
MAX_ENGINES = 8
_engines: OrderedDict[str, Engine] = OrderedDict()
_engines_lock = threading.Lock()


def engine_for(url: str) -> Engine:
    """One pooled engine per database URL and process; each new connection checks the server's version.
    The least recently used of more than :data:`MAX_ENGINES` is disposed (its idle connections closed), not
    left to the garbage collector with open connections."""
    with _engines_lock:
        engine = _engines.get(url)
        if engine is not None:
            _engines.move_to_end(url)
            return engine
        engine = create_engine(as_psycopg_url(url), pool_pre_ping=True, pool_size=4, max_overflow=4)
        event.listen(engine, "connect", require_supported_server)
        _engines[url] = engine
        while len(_engines) > MAX_ENGINES:
            _engines.popitem(last=False)[1].dispose()
        return engine


@lru_cache(maxsize=4)
def _embedded_app_url(home: str) -> str:
    from resources.embedded import resolve_database_urls
    from resources.settings import platform_settings

    return resolve_database_urls(platform_settings({"OBSERVATORY_HOME": home} if home else None))[0]


class PostgresResource(dg.ConfigurableResource):
    """The Observatory database (PostgreSQL with pgvector).

    ``url`` comes from ``OBSERVATORY_DATABASE_URL`` in production; with it empty
    the embedded server under ``embedded_home`` is started on first use.
    """

    url: str = Field(default="", description="SQLAlchemy/libpq URL of the application database.")
    embedded_home: str = Field(default="", description="OBSERVATORY_HOME of the embedded server, when url is empty.")

    def resolved_url(self) -> str:
        return self.url or _embedded_app_url(self.embedded_home)

    def get_engine(self) -> Engine:
        return engine_for(self.resolved_url())

    @property
    def display_url(self) -> str:
        """The URL with its password masked, safe for logs and metadata."""
        return mask_dsn(self.url) if self.url else f"embedded ({self.embedded_home or 'default home'})"


def register_vector_type(dbapi_connection) -> None:
    """Teach a psycopg connection pgvector's ``vector`` type (numpy in, ``Vector`` out; binary COPY)."""
    from pgvector.psycopg.vector import register_vector_info
    from psycopg.types import TypeInfo

    register_vector_info(dbapi_connection, TypeInfo.fetch(dbapi_connection, "vector"))


def _server(url: str) -> psycopg.Connection:
    """An autocommit libpq connection for server-level statements (CREATE/DROP DATABASE)."""
    conn = psycopg.connect(as_libpq_dsn(url), autocommit=True)
    try:
        require_supported_server(conn)
    except Exception:
        conn.close()
        raise
    return conn


def database_exists(server_url: str, name: str) -> bool:
    """Whether database ``name`` exists on the server behind ``server_url``."""
    with _server(server_url) as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None


def create_database(server_url: str, name: str, template: str | None = None) -> str:
    """(Re)create database ``name`` on the server of ``server_url`` (optionally from ``template``);
    returns its URL."""
    drop_database(server_url, name)
    statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template:
        statement += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
    with _server(server_url) as conn:
        conn.execute(statement)
    return database_url_in(server_url, name)


def drop_database(server_url: str, name: str) -> None:
    """Drop database ``name`` (closing this process's pooled and everyone else's connections to it)."""
    engine_for(database_url_in(server_url, name)).dispose()
    with _server(server_url) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
