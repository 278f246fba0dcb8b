"""The real Dagster UI (dagster-webserver) rendered by headless Chromium shows the platform."""

import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request

import pytest

from tests.conftest import ROOT, write
from tests.test_cli import run

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--virtual-time-budget=20000",
]  # fmt: skip


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def webserver(dagster_env):
    port = _free_port()
    server = subprocess.Popen(
        ["dagster-webserver", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
        cwd=ROOT, env=dagster_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{base}/server_info", timeout=2)
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, "dagster-webserver did not start"
                time.sleep(0.5)
        yield base
    finally:
        server.terminate()
        server.wait(timeout=30)


def render(url: str) -> str:
    chromium = shutil.which("chromium")
    assert chromium, "chromium is installed by .ci/run"
    with tempfile.TemporaryDirectory() as profile:
        done = subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", url],
                              capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_the_ui_shows_the_asset_its_metadata_and_the_sensor(dagster_env, webserver, tmp_path):
    payload = write(tmp_path / "ui.jsonl", '{"id": "1", "title": "Shown in the UI", "published_at": "2026-11-01"}\n')
    run(dagster_env, "observatory", "collect", "--file", str(payload), "--source", "ui-source")
    run(dagster_env, "observatory", "ingest")

    page = render(f"{webserver}/assets/raw_items")
    for text in ("raw_items", "ingestion", "collection_run_sensor", "ingest_collection_run", "delivered", "by_source"):
        assert text in page, f"{text!r} not rendered"

    graph = render(f"{webserver}/asset-groups/")
    assert "collection_runs" in graph and "raw_items" in graph
