"""The README's first command on a machine with nothing configured: embedded Postgres, no env vars."""

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT


def test_demo_runs_on_embedded_defaults_and_accounts_for_every_row(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OBSERVATORY_", "DAGSTER_"))}
    env["OBSERVATORY_HOME"] = str(tmp_path / "home")  # the default is ./.observatory; keep the checkout clean
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    try:
        demo = subprocess.run(["observatory", "demo"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert demo.returncode == 0, demo.stdout + demo.stderr
        assert "every delivered row accounted for: True" in demo.stdout
        trend_lines = [line for line in demo.stdout.splitlines() if line.strip().startswith("trend ")]
        assert len(trend_lines) == 4 and all("top: " in line for line in trend_lines)
        assert "'togstrejke'" in demo.stdout or "'rail strike'" in demo.stdout
        assert (tmp_path / "home" / "pgdata" / "PG_VERSION").read_text().strip() == "18"
        assert (tmp_path / "home" / "dagster_home" / "dagster.yaml").exists()
        status = subprocess.run(
            ["observatory", "status", "--json"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
        )
        totals = json.loads(status.stdout)["totals"]
        assert totals["runs"] == len(list((ROOT / "observatory_assets" / "sample_data").iterdir()))
        assert totals["loaded"] > 300 and totals["duplicates"] > 0 and totals["rejected"] > 0
        assert totals["delivered"] == totals["loaded"] + totals["duplicates"] + totals["rejected"]
    finally:
        subprocess.run(["observatory", "services", "stop"], cwd=ROOT, env=env, capture_output=True, timeout=120)
