"""Dagster's own tooling works on the project: `dg check defs`, `dg list defs` (configured by `[tool.dg]` in
pyproject.toml) and `dagster definitions validate` on workspace.yaml load the same code location."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from observatory_assets.definitions import defs
from tests.conftest import ROOT

pytestmark = pytest.mark.slow


def _tool(tmp_path: Path, *command: str) -> subprocess.CompletedProcess:
    venv = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OBSERVATORY_", "DAGSTER_"))}
    env.update(PATH=f"{venv}:{env.get('PATH', '')}", VIRTUAL_ENV=str(venv.parent), DAGSTER_HOME=str(tmp_path))
    env["OBSERVATORY_HOME"] = str(tmp_path / "home")  # loading the definitions starts nothing there
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_dg_checks_and_lists_the_definitions(tmp_path):
    checked = _tool(tmp_path, "dg", "check", "defs")
    assert checked.returncode == 0 and "All definitions loaded successfully" in checked.stdout + checked.stderr, (
        checked.stdout + checked.stderr
    )
    listed = _tool(tmp_path, "dg", "list", "defs", "--json")
    assert listed.returncode == 0, listed.stderr
    shown = json.loads(listed.stdout)
    expected_assets = {key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys()}
    assert {asset["asset_key"] for asset in shown["assets"]} == expected_assets
    assert {job["name"] for job in shown["jobs"]} >= {"ingest_collection_run", "update_trends"}
    assert {schedule["name"] for schedule in shown["schedules"]} >= {"nightly_backup", "daily_digest"}


def test_dagster_validates_the_workspace(tmp_path):
    done = _tool(tmp_path, "dagster", "definitions", "validate", "-w", "workspace.yaml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Validation successful for code location observatory" in done.stdout + done.stderr


def test_a_broken_definition_fails_the_check(tmp_path):
    broken = tmp_path / "broken_defs.py"
    broken.write_text("import dagster as dg\n\n@dg.asset(deps=['no_such_parent'])\ndef child(): ...\n\n"
                      "defs = dg.Definitions(assets=[child], jobs=[dg.define_asset_job('j', selection='nowhere')])\n")  # fmt: skip
    done = _tool(tmp_path, "dagster", "definitions", "validate", "-f", str(broken))
    assert done.returncode != 0
