"""The real `dagster` and `observatory` CLIs as subprocesses, with the Dagster instance in Postgres."""

import json
import subprocess

import dagster as dg
import pytest
import yaml

from tests.support.helpers import ROOT, run, write


@pytest.fixture
def instance_of(monkeypatch):
    """Opens the Dagster instance the subprocesses used (the DAGSTER_HOME of their environment)."""

    def open_instance(env) -> dg.DagsterInstance:
        monkeypatch.setenv("DAGSTER_HOME", env["DAGSTER_HOME"])
        return dg.DagsterInstance.get()

    return open_instance


def test_collect_then_dagster_asset_materialize_records_the_run_in_postgres(dagster_env, tmp_path, instance_of):
    payload = write(
        tmp_path / "in.jsonl",
        '{"id": "1", "title": "Hello", "published_at": "2026-11-01T10:00:00Z"}\n'
        '{"id": "1", "title": "Hello again"}\nnot json\n',
    )
    run_id = run(dagster_env, "observatory", "collect", "--file", str(payload), "--source", "cli-test").strip()
    assert run_id.isdigit()

    run(
        dagster_env,
        "dagster",
        "asset",
        "materialize",
        "-m",
        "observatory_assets.definitions",
        "--select",
        "raw_items",
        "--partition",
        run_id,
    )

    with instance_of(dagster_env) as instance:
        assert "postgres" in type(instance.run_storage).__module__
        runs = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/partition": run_id}))
        assert [r.status for r in runs] == [dg.DagsterRunStatus.SUCCESS]
        materialization = instance.get_latest_materialization_event(dg.AssetKey("raw_items"))
        metadata = materialization.asset_materialization.metadata
        assert (metadata["loaded"].value, metadata["duplicates"].value, metadata["rejected"].value) == (1, 1, 1)

    status = json.loads(run(dagster_env, "observatory", "status", "--json"))
    assert status["runs"][0]["id"] == int(run_id)
    assert {k: status["runs"][0][k] for k in ("status", "delivered", "loaded", "duplicates", "rejected")} == {
        "status": "completed", "delivered": 3, "loaded": 1, "duplicates": 1, "rejected": 1,
    }  # fmt: skip
    assert status["totals"]["accounted_for"] is True


def test_observatory_ingest_runs_waiting_collection_runs_through_dagster(dagster_env, tmp_path, instance_of):
    for name in ("a", "b"):
        payload = write(tmp_path / f"{name}.jsonl", '{"id": "%s", "title": "Item %s"}\n' % (name, name))
        run(dagster_env, "observatory", "collect", "--file", str(payload), "--source", name)
    out = run(dagster_env, "observatory", "ingest")
    assert out.count(": ok") == 2
    assert "no completed collection runs waiting" in run(dagster_env, "observatory", "ingest")
    with instance_of(dagster_env) as instance:
        assert len(instance.get_runs(filters=dg.RunsFilter(job_name="ingest_collection_run"))) == 2


def test_cli_reports_errors_without_a_traceback(dagster_env, tmp_path):
    done = subprocess.run(
        ["observatory", "collect", "--file", str(tmp_path / "missing.csv"), "--source", "x"],
        cwd=ROOT,
        env=dagster_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr and "missing.csv" in done.stderr


def test_the_secret_in_a_database_url_is_masked(dagster_env):
    from resources.settings import mask_dsn

    masked = mask_dsn("postgresql://observatory:s3cr3t@db.example:5432/observatory")
    assert "s3cr3t" not in masked and "***" in masked
    assert "s3cr3t" not in yaml.safe_dump({"shown": masked})
