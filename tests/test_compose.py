"""The production docker-compose file is valid (checked with Debian's docker-compose; no engine runs here)."""

import shutil
import subprocess

import yaml

from tests.conftest import ROOT


def test_docker_compose_config_parses_and_has_every_service():
    assert shutil.which("docker-compose"), "docker-compose is installed by .ci/run"
    env = {"POSTGRES_PASSWORD": "example", "MINIO_ROOT_PASSWORD": "example-secret", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(["docker-compose", "-f", "docker-compose.yml", "config"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    config = yaml.safe_load(done.stdout)
    assert set(config["services"]) == {"postgres", "minio", "minio-bucket", "migrate", "code-location", "webserver", "daemon"}
    assert config["services"]["postgres"]["image"].startswith("pgvector/pgvector")
    assert "alembic upgrade head" in " ".join(config["services"]["migrate"]["command"])
    assert all("healthcheck" in config["services"][s] for s in ("postgres", "minio", "code-location", "webserver"))


def test_production_dagster_yaml_queues_runs_in_postgres():
    instance = yaml.safe_load((ROOT / "docker" / "dagster.yaml").read_text())
    assert instance["run_coordinator"]["class"] == "QueuedRunCoordinator"
    assert "postgres" in instance["storage"]
    assert instance["storage"]["postgres"]["postgres_db"]["password"] == {"env": "OBSERVATORY_POSTGRES_PASSWORD"}
