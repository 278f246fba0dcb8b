"""The switch to Dagster's Celery executor (``OBSERVATORY_EXECUTOR``), its queues, and the workers'
``celery.yaml``: what the executor sends with is what the workers run with."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from observatory_assets.lib.dagster import CELERY_SETTINGS, heavy_job_executor
from resources import observatory_resources
from resources.settings import displayed_value, platform_settings
from tests.support.helpers import ROOT

HEAVY_JOBS = ("ingest_collection_run", "ingest_to_events", "enrich_collection_run", "cluster_events",
              "export_content_and_network")  # fmt: skip
BROKER = "redis://:broker-secret@127.0.0.1:6379/0"


def test_the_workers_celery_yaml_has_the_executors_settings_and_no_secret():
    config = yaml.safe_load((ROOT / "docker" / "celery.yaml").read_text())["execution"]["config"]
    assert config["config_source"] == CELERY_SETTINGS
    assert config["broker"] == {"env": "OBSERVATORY_CELERY_BROKER"}
    assert config["backend"] == {"env": "OBSERVATORY_CELERY_BACKEND"}
    assert CELERY_SETTINGS["task_default_queue"] == "default"  # dagster-celery's own default is "dagster"


def test_the_default_executor_is_unchanged(monkeypatch):
    monkeypatch.delenv("OBSERVATORY_EXECUTOR", raising=False)
    assert platform_settings().executor == "default"
    assert heavy_job_executor() is None


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"OBSERVATORY_EXECUTOR": "dask"}, "OBSERVATORY_EXECUTOR: input should be 'default' or 'celery'"),
        ({"OBSERVATORY_EXECUTOR": "celery"}, "needs OBSERVATORY_CELERY_BROKER"),
    ],
)
def test_a_wrong_executor_setting_is_one_clear_line(env, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        observatory_resources(platform_settings({"OBSERVATORY_HOME": str(tmp_path), **env}))


def test_the_broker_password_is_never_shown():
    shown = displayed_value("OBSERVATORY_CELERY_BROKER", {"OBSERVATORY_CELERY_BROKER": BROKER})
    assert "broker-secret" not in shown and shown == "(set)"


def test_celery_runs_the_heavy_jobs_with_their_steps_on_the_three_queues(tmp_path):
    """In a fresh process with ``OBSERVATORY_EXECUTOR=celery``: the heavy jobs (only they) use the Celery
    executor, whose broker comes from the environment at run time; steps go to ingest, enrich or default."""
    script = f"""
import json
from observatory_assets.definitions import defs
jobs = {{j.name: j.executor_def.name for j in defs.resolve_all_job_defs()}}
queues = {{}}
for name in {list(HEAVY_JOBS)!r}:
    for node in defs.resolve_job_def(name).graph.node_dict.values():
        queues[node.name] = node.tags.get("dagster-celery/queue", "default")
print(json.dumps({{"jobs": jobs, "queues": queues}}))
"""
    env = {"PATH": "/usr/bin:/bin", "OBSERVATORY_HOME": str(tmp_path), "OBSERVATORY_EXECUTOR": "celery",
           "OBSERVATORY_CELERY_BROKER": BROKER}  # fmt: skip
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert {name: found["jobs"][name] for name in HEAVY_JOBS} == dict.fromkeys(HEAVY_JOBS, "celery")
    assert all(executor != "celery" for name, executor in found["jobs"].items() if name not in HEAVY_JOBS)
    assert found["queues"]["raw_items"] == "ingest"
    assert found["queues"]["item_features"] == found["queues"]["item_embeddings"] == "enrich"
    assert found["queues"]["events"] == "default"
    assert "broker-secret" not in done.stdout + done.stderr
