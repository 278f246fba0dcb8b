"""Secrets never leak: the demo run against a password-protected database URL, a real S3 server
(SeaweedFS, keys required) and a Ghost admin key set, then the password and the secret key are
searched for in everything a user or operator sees: the commands' output, every event of every run
in the Dagster instance (messages and metadata), `observatory config`, `env` and `status`, and the
files under OBSERVATORY_HOME."""

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import dagster as dg
import psycopg
import pytest
from dagster._serdes import serialize_value

from resources.embedded import database_url_in
from resources.settings import as_libpq_dsn, as_psycopg2_url
from tests.conftest import ROOT, create_database, drop_database
from tests.support.roles import as_role, drop_role

PASSWORD = "Db-pw-never-shown-8e1f"
PSEUDONYM_KEY = "pseudonyms-never-shown-7f3e9a"
GHOST_KEY = "6565a1b2c3d4e5f6a7b8c9d0:00aa11bb22cc33dd44ee55ff66aa77bb88cc99dd00ee11ff22aa33bb44cc55dd"


@pytest.fixture
def protected_database(pg_server):
    """A database owned by a role that has a password, given in the URL (pgserver listens on a socket)."""
    role, name = f"owner_{uuid.uuid4().hex[:8]}", f"secrets_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(as_libpq_dsn(pg_server), autocommit=True) as conn:
        conn.execute(psycopg.sql.SQL("CREATE ROLE {} LOGIN SUPERUSER PASSWORD {}").format(
            psycopg.sql.Identifier(role), psycopg.sql.Literal(PASSWORD)))  # fmt: skip
    create_database(pg_server, name)
    yield as_role(database_url_in(pg_server, name), role, PASSWORD)
    for database in (name, "dagster"):
        drop_database(pg_server, database)
    drop_role(pg_server, role)


def test_the_demo_leaks_neither_the_database_password_nor_the_s3_secret(protected_database, s3_server, tmp_path):
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OBSERVATORY_", "DAGSTER_"))}
    env.update(
        OBSERVATORY_HOME=str(home), OBSERVATORY_DATABASE_URL=protected_database,
        OBSERVATORY_S3_ENDPOINT=s3_server.endpoint, OBSERVATORY_S3_BUCKET=f"secrets-{uuid.uuid4().hex[:8]}",
        OBSERVATORY_S3_ACCESS_KEY=s3_server.access_key, OBSERVATORY_S3_SECRET_KEY=s3_server.secret_key,
        OBSERVATORY_GHOST_ADMIN_KEY=GHOST_KEY, OBSERVATORY_PSEUDONYM_KEY=PSEUDONYM_KEY,
        PATH=f"{Path(sys.executable).parent}:{env.get('PATH', '')}",
    )  # fmt: skip
    secrets = {"database password": PASSWORD, "S3 secret key": s3_server.secret_key,
               "Ghost admin key secret": GHOST_KEY.split(":")[1], "pseudonym key": PSEUDONYM_KEY}  # fmt: skip
    seen: dict[str, str] = {}

    def observatory(*args: str) -> None:
        done = subprocess.run(["observatory", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout + done.stderr
        seen[f"observatory {' '.join(args)}"] = done.stdout + done.stderr

    observatory("demo")
    assert "every delivered row accounted for: True" in seen["observatory demo"]
    for command in (("config",), ("env",), ("status",), ("status", "--json"), ("backup", "list")):
        observatory(*command)
    assert "(set)" in seen["observatory config"]  # the secrets are set, and only said to be

    with pytest.MonkeyPatch.context() as patch:  # the instance reads its storage URL from the environment
        patch.setenv("DAGSTER_HOME", str(home / "dagster_home"))
        patch.setenv(
            "OBSERVATORY_DAGSTER_DATABASE_URL", as_psycopg2_url(database_url_in(protected_database, "dagster"))
        )
        with dg.DagsterInstance.get() as instance:
            runs = instance.get_runs()
            demo_runs = int(re.search(r"Dagster runs \(.*\): (\d+)", seen["observatory demo"]).group(1))
            assert len(runs) >= demo_runs >= 14  # what the demo ran is recorded (two designs: two ingest runs)
            for run in runs:
                seen[f"run {run.run_id}"] = serialize_value(run) + "".join(
                    serialize_value(record) for record in instance.all_logs(run.run_id)
                )
    files = [p for p in home.rglob("*") if p.is_file() and "pgdata" not in p.parts]
    assert any(p.name == "dagster.yaml" for p in files)
    for path in files:
        seen[str(path.relative_to(home))] = path.read_bytes().decode("utf-8", "replace")

    leaks = [(what, where) for where, content in seen.items() for what, secret in secrets.items() if secret in content]
    assert leaks == []
