"""The real Dagster UI (dagster-webserver) rendered by headless Chromium shows the platform."""

import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request

import pytest

from observatory_assets.definitions import defs
from tests.support.helpers import ROOT, run, write

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--virtual-time-budget=20000",
    "--window-size=1280,4000",  # the catalog renders only the rows in view: every asset must fit
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
        cwd=ROOT,
        env=dagster_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
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
        done = subprocess.run(
            [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", url],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def render_showing(url: str, texts: list[str], attempts: int = 3) -> list[str]:
    """Render until every text is on the page (the UI loads its data asynchronously); returns the missing ones."""
    for _ in range(attempts):
        page = render(url)
        missing = [text for text in texts if text not in page]
        if not missing:
            break
    return missing


def test_the_ui_shows_the_assets_their_metadata_groups_and_the_sensor(dagster_env, webserver, tmp_path):
    payload = write(tmp_path / "ui.jsonl", '{"id": "1", "title": "Shown in the UI", "published_at": "2026-11-01"}\n')
    run(dagster_env, "observatory", "collect", "--file", str(payload), "--source", "ui-source")
    run(dagster_env, "observatory", "ingest")

    texts = ["raw_items", "ingestion", "collection_run_sensor", "ingest_collection_run", "delivered", "by_source"]
    assert render_showing(f"{webserver}/assets/raw_items", texts) == []

    keys = [key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys()]
    assert render_showing(f"{webserver}/assets", keys) == [], "assets missing from the catalog"
    groups = ["ingestion", "enrichment", "events", "trends", "publishing", "exports", "operations"]
    assert render_showing(f"{webserver}/asset-groups/", groups) == [], "groups missing from the lineage"
