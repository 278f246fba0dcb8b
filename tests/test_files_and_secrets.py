"""Files and secrets: what may be collected from the local disk, symbolic links at open time, the local
inbox, a database password given as ``?password=``, and benchmarks that run on their own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from observatory_assets.defs.ingestion.collect import PathRefused, SourceRequest, collect
from observatory_assets.defs.ingestion.inbox import waiting_objects
from resources.embedded import dagster_instance_yaml
from resources.object_store import LocalObjectStore
from resources.settings import platform_settings
from tests.support.helpers import ROOT, write

SECRET = "SECRET-ssh-key-material"


@pytest.fixture
def secret(tmp_path) -> Path:
    return write(tmp_path / "outside" / "id_rsa", json.dumps({"title": SECRET}) + "\n")


def test_the_default_collect_root_is_one_data_directory_and_empty_means_none(engine, store, tmp_path, monkeypatch):
    monkeypatch.chdir(write(tmp_path / "work" / ".env", '{"title": "OBSERVATORY_SECRET_KEY=x"}\n').parent)
    monkeypatch.setenv("HOME", str(tmp_path / "work"))
    monkeypatch.setenv("OBSERVATORY_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("OBSERVATORY_COLLECT_ROOTS")
    assert platform_settings().collect_root_dirs == ((tmp_path / "home" / "collect").resolve(),)
    with pytest.raises(PathRefused):  # neither the working directory nor the home
        collect(engine, store, [SourceRequest("env", "jsonl", path=".env")])
    allowed = write(tmp_path / "home" / "collect" / "items.jsonl", '{"title": "ok"}\n')
    collect(engine, store, [SourceRequest("ok", "jsonl", path=str(allowed))])
    monkeypatch.setenv("OBSERVATORY_COLLECT_ROOTS", "")
    assert (
        platform_settings().collect_root_dirs
        == ()
        == platform_settings({"OBSERVATORY_COLLECT_ROOTS": ""}).collect_root_dirs
    )
    with pytest.raises(PathRefused):
        collect(engine, store, [SourceRequest("ok", "jsonl", path=str(allowed))])


def test_a_file_swapped_for_a_symlink_after_its_check_is_refused_at_open(engine, store, tmp_path, monkeypatch, secret):
    monkeypatch.setenv("OBSERVATORY_COLLECT_ROOTS", str(tmp_path / "allowed"))
    target = write(tmp_path / "allowed" / "items.jsonl", '{"title": "harmless"}\n')
    real_resolve, resolved = Path.resolve, []

    def racing_resolve(self, strict=False):  # the attacker wins the race right after the second check
        path = real_resolve(self, strict)
        if path == target:
            resolved.append(path)
            if len(resolved) == 2:
                target.unlink()
                target.symlink_to(secret)
        return path

    monkeypatch.setattr(Path, "resolve", racing_resolve)
    with pytest.raises(PathRefused, match="symbolic link"):
        collect(engine, store, [SourceRequest("raced", "jsonl", path=str(target))])
    stored = [store.root / key for key in store.list("")]
    assert len(resolved) == 2 and all(SECRET not in path.read_text() for path in stored)


def test_the_local_inbox_does_not_follow_a_symlink(tmp_path, secret):
    store = LocalObjectStore(tmp_path / "objects")
    dropped = store.root / "inbox" / "wire" / "items.jsonl"
    dropped.parent.mkdir(parents=True)
    dropped.symlink_to(secret)
    assert list(waiting_objects(store)) == []
    with pytest.raises(ValueError, match="symbolic link"), store.open("inbox/wire/items.jsonl"):
        pass


def test_a_password_given_as_a_query_parameter_is_masked_and_never_written_to_dagster_yaml(tmp_path):
    url = "postgresql://observatory@db.example.org:5432/observatory?password=s3cr3t-pw&sslmode=require"
    env = {**os.environ, "OBSERVATORY_DATABASE_URL": url, "OBSERVATORY_HOME": str(tmp_path)}
    shown = subprocess.run(
        [sys.executable, "-m", "observatory_assets.cli", "config"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert shown.returncode == 0, shown.stderr
    assert "s3cr3t-pw" not in shown.stdout + shown.stderr and "db.example.org" in shown.stdout
    written = yaml.safe_dump(dagster_instance_yaml(url.replace("/observatory?", "/dagster?")))
    assert "s3cr3t-pw" not in written
    assert dagster_instance_yaml(url)["storage"]["postgres"]["postgres_url"] == {
        "env": "OBSERVATORY_DAGSTER_DATABASE_URL"
    }


def test_a_benchmark_runs_on_its_own_without_collect_roots(pg_server, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "OBSERVATORY_COLLECT_ROOTS"}
    env.update(OBSERVATORY_DATABASE_URL=pg_server, OBSERVATORY_HOME=str(tmp_path / "home"))
    done = subprocess.run(
        [sys.executable, "bench/ingest.py", "--n", "300", "--reps", "1"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1])
    assert list((tmp_path / "home" / "collect").iterdir()) == []  # its scratch payloads went with it
