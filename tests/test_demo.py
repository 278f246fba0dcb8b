"""The README's first command on a machine with nothing configured: embedded Postgres, no env vars, and
every asset check green in the Dagster instance afterwards."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from observatory_assets.cli.demo import DEMO_DESIGNS, PLATFORM_SAMPLES
from observatory_assets.definitions import defs
from tests.support.helpers import ROOT

#: Every asset check of the code location, as ``asset:check`` (several assets have a check of one name).
CHECKS = sorted(f"{key.asset_key.to_user_string()}:{key.name}" for key in defs.resolve_asset_graph().asset_check_keys)


def latest_check_evaluations(dagster_home: Path) -> dict[str, bool | None]:
    """Whether each asset check's latest evaluation recorded in the instance passed (None: never ran)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DAGSTER_HOME", str(dagster_home))
        with dg.DagsterInstance.get() as instance:
            keys = list(defs.resolve_asset_graph().asset_check_keys)
            records = instance.event_log_storage.get_latest_asset_check_execution_by_key(keys)
    evaluations = {}
    for key in keys:
        record = records.get(key)
        evaluation = record.event.asset_check_evaluation if record and record.event else None
        evaluations[f"{key.asset_key.to_user_string()}:{key.name}"] = evaluation.passed if evaluation else None
    return dict(sorted(evaluations.items()))


def test_demo_runs_on_embedded_defaults_and_accounts_for_every_row(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OBSERVATORY_", "DAGSTER_"))}
    env["OBSERVATORY_HOME"] = str(tmp_path / "home")  # the default is ./.observatory; keep the checkout clean
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    try:
        demo = subprocess.run(["observatory", "demo"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert demo.returncode == 0, demo.stdout + demo.stderr
        assert "every delivered row accounted for: True" in demo.stdout
        assert "published to the static site" in demo.stdout
        # through the sensor's path, run by run from a fresh archive: every event holds one story
        assert float(re.search(r"B³F1 (\d\.\d+)", demo.stdout).group(1)) >= 0.95
        assert re.search(r"analysis: volumes counted on [1-9]\d* days; actor network of [1-9]\d* nodes", demo.stdout)
        index = tmp_path / "home" / "objects" / "site" / "index.html"
        assert index.is_file() and "digests/" in index.read_text()
        trend_lines = [line for line in demo.stdout.splitlines() if line.strip().startswith("trend ")]
        assert len(trend_lines) == 4 and all("top: " in line for line in trend_lines)
        evidence = [int(re.search(r", (\d+) evidence\)", line).group(1)) for line in trend_lines]
        assert all(n > 0 for n in evidence) and all(" matched '" in line for line in trend_lines)
        assert (tmp_path / "home" / "pgdata" / "PG_VERSION").read_text().strip() == "18"
        assert (tmp_path / "home" / "dagster_home" / "dagster.yaml").exists()
        status = subprocess.run(
            ["observatory", "status", "--json"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
        )
        totals = json.loads(status.stdout)["totals"]
        assert totals["runs"] == len(DEMO_DESIGNS)  # polled: one collection run per query design
        feeds = len(list((ROOT / "observatory_assets" / "sample_data").iterdir()))
        sources = feeds + len(PLATFORM_SAMPLES)  # the platforms' APIs answer again, with nothing new past the mark
        assert f"cycle 1 fetched {sources} of {sources} feeds" in demo.stdout
        assert (
            f"cycle 2 sent {sources} requests, {feeds} answered 304 Not Modified, 0 re-collected, 0 new runs"
            in demo.stdout
        )
        platforms = next(line for line in demo.stdout.splitlines() if line.strip().startswith("platforms: "))
        assert {"reddit", "bluesky", "rss"} <= {entry.split()[0] for entry in platforms.split(": ", 1)[1].split(", ")}
        assert totals["loaded"] > 300 and totals["duplicates"] > 0 and totals["rejected"] > 0
        assert totals["delivered"] == totals["loaded"] + totals["duplicates"] + totals["rejected"]
        assert latest_check_evaluations(tmp_path / "home" / "dagster_home") == dict.fromkeys(CHECKS, True)
    finally:
        subprocess.run(["observatory", "services", "stop"], cwd=ROOT, env=env, capture_output=True, timeout=120)
