"""`make screenshots` still works: on a home of its own, the script runs the demo, starts the Dagster
webserver, and headless Chromium writes the pictures the README and docs/actors.md show."""

import os
import socket
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

SCRIPT = ROOT / "scripts" / "screenshots.py"


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OBSERVATORY_", "DAGSTER_"))}
    return {**env, "OBSERVATORY_HOME": str(home), "PATH": f"{Path(sys.executable).parent}:{env.get('PATH', '')}"}


def _run(home: Path, *args: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], cwd=ROOT, env=_env(home), capture_output=True, text=True, timeout=timeout
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n", f"{path.name} is not a PNG"
    return struct.unpack(">II", header[16:24])


def test_a_home_without_a_digest_is_one_line(tmp_path):
    done = _run(tmp_path / "fresh", "--out", str(tmp_path / "img"), timeout=120)
    assert done.returncode == 1 and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert "no published digest" in done.stderr and not (tmp_path / "img").exists()


@pytest.mark.slow
def test_the_script_takes_the_five_pictures_of_the_demo(tmp_path):
    out, home = tmp_path / "img", tmp_path / "home"
    try:
        done = _run(home, "--demo", "--out", str(out), "--port", str(free_port()), timeout=1200)
    finally:  # the demo leaves its embedded Postgres running
        subprocess.run(["observatory", "services", "stop"], cwd=ROOT, env=_env(home), capture_output=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    names = ("asset-graph", "trend-chart", "digest", "volume-stats", "actor-network")
    pictures = {name: out / f"{name}.png" for name in names}
    assert done.stdout.split() == [str(path) for path in pictures.values()]
    assert png_size(pictures["asset-graph"]) == (1600, 1150)
    width, height = png_size(pictures["trend-chart"])
    assert width > 300 and height > 150  # the chart's figure, not an empty element
    assert png_size(pictures["digest"])[0] == 760
    assert all(path.stat().st_size > 10_000 for path in pictures.values())  # a blank page is a few KB
    for analysis in ("volume-stats", "actor-network"):  # the metadata's dialog: a chart, a table
        width, height = png_size(pictures[analysis])
        assert width > 400 and height > 300
