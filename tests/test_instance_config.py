"""The Dagster instance is configured once: the compose file (docker/dagster.yaml) and the embedded instance
(resources/embedded.py) differ only in where their storage lives, and both are valid instance configs."""

import shutil
from importlib import import_module
from pathlib import Path

import yaml
from dagster._core.instance.config import dagster_instance_config

from resources.embedded import INSTANCE_SETTINGS, dagster_instance_yaml
from tests.conftest import ROOT

COMPOSE_INSTANCE = ROOT / "docker" / "dagster.yaml"


def test_the_compose_instance_equals_the_embedded_one_but_for_its_storage():
    compose = yaml.safe_load(COMPOSE_INSTANCE.read_text())
    embedded = dagster_instance_yaml("postgresql://observatory@127.0.0.1:5432/dagster")
    assert set(compose.pop("storage")["postgres"]) == {"postgres_db"}
    assert set(embedded.pop("storage")["postgres"]) == {"postgres_url"}
    assert compose == embedded == INSTANCE_SETTINGS
    # declarative automation is evaluated by the code location's sensor in both
    assert compose["auto_materialize"] == {"enabled": True, "use_sensors": True}


def test_both_instance_configs_pass_dagsters_schema(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("OBSERVATORY_DAGSTER_DB_USER", "observatory")
    monkeypatch.setenv("OBSERVATORY_DAGSTER_DB_PASSWORD", "not-a-secret")
    compose_home, embedded_home = tmp_path / "compose", tmp_path / "embedded"
    compose_home.mkdir()
    embedded_home.mkdir()
    shutil.copy(COMPOSE_INSTANCE, compose_home / "dagster.yaml")
    (embedded_home / "dagster.yaml").write_text(
        yaml.safe_dump(dagster_instance_yaml("postgresql://observatory@127.0.0.1:5432/dagster"))
    )
    for home in (compose_home, embedded_home):
        config, _ = dagster_instance_config(str(home))
        assert config["auto_materialize"]["use_sensors"] is True


def test_run_monitoring_checks_the_health_of_run_workers():
    """A run whose worker died is failed by the daemon, not left STARTED for ever (tests/test_daemon_polling.py
    kills one): monitoring is on with start and cancel timeouts, and the launcher can check a worker's health."""
    monitoring = INSTANCE_SETTINGS["run_monitoring"]
    assert monitoring["enabled"] is True
    assert monitoring["start_timeout_seconds"] > 0 and monitoring["cancel_timeout_seconds"] > 0
    assert monitoring["max_resume_run_attempts"] == 0  # the default launcher cannot resume a run
    launcher = INSTANCE_SETTINGS["run_launcher"]
    assert getattr(import_module(launcher["module"]), launcher["class"])().supports_check_run_worker_health
