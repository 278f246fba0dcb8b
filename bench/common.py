"""Shared benchmark plumbing: scratch databases on the configured server, child-process timing."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from observatory_assets.lib import migrations  # noqa: E402
from resources.embedded import database_url_in, resolve_database_urls  # noqa: E402
from resources.postgres import engine_for  # noqa: E402
from resources.settings import as_libpq_dsn, platform_settings  # noqa: E402


@contextmanager
def scratch_database(migrated: bool = True, template: str | None = None):
    """A new database on the configured (default: embedded) server, dropped afterwards; with
    ``template`` (the URL of a database nobody is connected to) a copy of that database instead."""
    server_url = resolve_database_urls()[0]
    name = f"bench_{uuid.uuid4().hex[:8]}"
    create = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template is not None:
        engine_for(template).dispose()
        template_name = psycopg.conninfo.conninfo_to_dict(as_libpq_dsn(template))["dbname"]
        create += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template_name))
    with psycopg.connect(as_libpq_dsn(server_url), autocommit=True) as conn:
        conn.execute(create)
    url = database_url_in(server_url, name)
    try:
        if migrated and template is None:
            migrations.upgrade(url)
        yield url
    finally:
        engine_for(url).dispose()
        with psycopg.connect(as_libpq_dsn(server_url), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def collect_root() -> Path:
    """The first directory files may be collected from (``OBSERVATORY_COLLECT_ROOTS``; unset,
    ``<home>/collect``), created: benchmarks write their payloads below it, so each one runs on its own.
    None configured stops the benchmark with one line."""
    roots = platform_settings().collect_root_dirs
    if not roots:
        raise SystemExit(
            "OBSERVATORY_COLLECT_ROOTS is empty: a benchmark needs a directory to collect its payloads from"
        )
    roots[0].mkdir(parents=True, exist_ok=True)
    return roots[0]


def payload_directory(prefix: str = "bench-") -> tempfile.TemporaryDirectory:
    """A scratch directory for a benchmark's payloads below :func:`collect_root`, removed afterwards."""
    return tempfile.TemporaryDirectory(prefix=prefix, dir=collect_root())


def run_child(script: Path, *args: str) -> dict:
    """Run a benchmark step in a fresh Python process (so its peak RSS is its own); it prints one JSON object."""
    done = subprocess.run([sys.executable, str(script), *args], cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[:1500] + " ... " + done.stderr[-1500:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def peak_rss_mb() -> float:
    """This process's peak resident set size (VmHWM: unlike ``ru_maxrss`` it is not inherited
    from the parent across fork and exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError("no VmHWM in /proc/self/status")


@contextmanager
def timed(results: dict, name: str):
    started = time.perf_counter()
    yield
    results[name] = time.perf_counter() - started
