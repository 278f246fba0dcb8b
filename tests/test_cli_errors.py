"""A new user's first commands: a fresh home is migrated on first use and an external database without the
schema names the command to run (the real `observatory` CLI as a subprocess), and every error a user can
cause or meet is one line on stderr with a non-zero exit, never a traceback (in this process)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, write
from tests.support.cli import invoke

SECRET = "pw-never-shown-4711"


def observatory(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["observatory", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(done, *fragments: str) -> str:
    """Failed (a subprocess or a command run in this process) with exactly one line on stderr that holds
    every fragment (and no traceback, no secret)."""
    lines = done.stderr.strip().splitlines()
    code = done.returncode if isinstance(done, subprocess.CompletedProcess) else done.exit_code
    assert code != 0 and len(lines) == 1, done.stdout + done.stderr
    assert lines[0].startswith("observatory") and "Traceback" not in done.stderr and SECRET not in done.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def feed(tmp_path) -> Path:
    return write(tmp_path / "feed.jsonl", '{"id": "1", "title": "Hello", "published_at": "2026-11-01T10:00:00Z"}\n')


def test_the_first_command_on_a_fresh_home_migrates_the_embedded_database(tmp_path, feed):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OBSERVATORY_", "DAGSTER_"))}
    env.update(OBSERVATORY_HOME=str(tmp_path / "new"), PATH=f"{Path(sys.executable).parent}:{env.get('PATH', '')}")
    env["OBSERVATORY_COLLECT_ROOTS"] = str(feed.parent)  # the feed lies outside the default roots (cwd, home)
    try:
        done = observatory(env, "collect", "--file", str(feed), "--source", "s")
        assert done.returncode == 0 and done.stdout.strip() == "1", done.stdout + done.stderr
        status = observatory(env, "status")
        assert status.returncode == 0 and status.stdout.splitlines()[1].split()[:2] == ["1", "completed"]
    finally:
        observatory(env, "services", "stop")


def test_an_external_database_without_the_schema_names_the_command_to_run(dagster_env, empty_database_url, feed):
    env = {**dagster_env, "OBSERVATORY_DATABASE_URL": empty_database_url}
    line = assert_one_line_error(observatory(env, "collect", "--file", str(feed), "--source", "s"),
                                 "has no Observatory schema", "run `observatory migrate`")  # fmt: skip
    assert "observatory migrate" in line
    assert observatory(env, "migrate").returncode == 0
    assert observatory(env, "status").returncode == 0


def test_an_unreachable_database(dagster_env):
    env = {**dagster_env, "OBSERVATORY_DATABASE_URL": f"postgresql://someone:{SECRET}@127.0.0.1:1/observatory"}
    assert_one_line_error(invoke("status", env=env), "database is unreachable", "127.0.0.1")


def test_an_unreachable_s3_server(dagster_env, feed):
    env = {**dagster_env, "OBSERVATORY_S3_ENDPOINT": "127.0.0.1:1", "OBSERVATORY_S3_ACCESS_KEY": "k",
           "OBSERVATORY_S3_SECRET_KEY": SECRET}  # fmt: skip
    assert_one_line_error(invoke("collect", "--file", str(feed), "--source", "s", env=env),
                          "object storage is unreachable")  # fmt: skip


def test_wrong_s3_keys(dagster_env, s3_server, feed):
    env = {**dagster_env, "OBSERVATORY_S3_ENDPOINT": s3_server.endpoint, "OBSERVATORY_S3_BUCKET": s3_server.bucket,
           "OBSERVATORY_S3_ACCESS_KEY": s3_server.access_key, "OBSERVATORY_S3_SECRET_KEY": SECRET}  # fmt: skip
    assert_one_line_error(invoke("collect", "--file", str(feed), "--source", "s", env=env),
                          "object storage refused", "OBSERVATORY_S3_SECRET_KEY")  # fmt: skip


def test_a_missing_file(dagster_env, tmp_path):
    done = invoke("collect", "--file", str(tmp_path / "nowhere.xml"), "--source", "s", env=dagster_env)
    assert_one_line_error(done, "no such file", "nowhere.xml")


@pytest.mark.parametrize(
    "args",
    [("collect", "--file", "f.xml", "--source", "s", "--format", "xml"), ("export", "items", "--format", "docx")],
)
def test_an_unknown_format(dagster_env, args):
    assert assert_one_line_error(invoke(*args, env=dagster_env), "'--format'", repr(args[-1])).endswith("--help`)")


@pytest.mark.parametrize(
    ("variable", "value", "command"),
    [
        ("OBSERVATORY_S3_SECURE", "maybe", ("status",)),
        ("OBSERVATORY_EMBEDDER", "bert", ("enrich",)),
        ("OBSERVATORY_RETENTION_RAW_ITEMS_MONTHS", "two years", ("config",)),
    ],
)
def test_a_bad_configuration_value(dagster_env, variable, value, command):
    assert_one_line_error(invoke(*command, env={**dagster_env, variable: value}), variable, repr(value))
