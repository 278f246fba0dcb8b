"""The README's pictures, taken from the running platform by headless Chromium (``make screenshots``).

Starts the Dagster webserver on the configured home (``OBSERVATORY_HOME``, the demo's by default; with
``--demo`` it runs ``observatory demo`` there first) and drives Debian's Chromium through Playwright:

- ``asset-graph.png``: the global asset lineage in the Dagster UI, every group expanded;
- ``trend-chart.png``: the first trend chart of the newest daily digest;
- ``digest.png``: the top of the newest daily digest of the static site;
- ``volume-stats.png`` and ``actor-network.png``: the analysis assets' latest materializations in the Dagster
  UI, ``volume_stats`` with its chart per design and ``actor_network`` with its top actors per community
  (``--demo`` materializes both after the demo, which leaves them to the daemon's automation).

A missing part (no Chromium, no digest yet, a webserver that does not start) is one line and exit 1.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Page, sync_playwright

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from resources.embedded import prepare_dagster_home  # noqa: E402 (the project root is on the path now)
from resources.settings import platform_settings  # noqa: E402


class ScreenshotError(Exception):
    """A part the pictures need is missing; the message says which."""


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        raise ScreenshotError("chromium is not installed (make prerequisites)")
    return found


@contextmanager
def dagster_webserver(port: int):
    """The Dagster UI of this home on 127.0.0.1:``port``, until the block ends."""
    prepare_dagster_home()  # exports DAGSTER_HOME (and the storage URL) to the webserver
    binary = Path(sys.executable).parent / "dagster-webserver"
    server = subprocess.Popen(
        [str(binary), "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                urllib.request.urlopen(f"{base}/server_info", timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise ScreenshotError(f"dagster-webserver did not start on port {port}") from None
                time.sleep(0.5)
        yield base
    finally:
        server.terminate()
        server.wait(timeout=30)


def newest(folder: Path, pattern: str, what: str) -> Path:
    found = sorted(folder.glob(pattern))
    if not found:
        raise ScreenshotError(f"no {what} under {folder} yet (run the demo first: make demo, or --demo)")
    return found[-1]


def asset_graph(page: Page, base: str, target: Path) -> None:
    """The global lineage with every group expanded (the UI's Alt+E) and zoomed to fit, without the
    navigation, the asset list or the community prompt."""
    page.request.post(f"{base}/graphql", data={"query": "mutation { setNuxSeen }"})  # the prompt, seen
    page.goto(f"{base}/asset-groups", wait_until="networkidle")
    page.wait_for_selector("text=ingestion", timeout=60_000)
    page.keyboard.press("Alt+e")
    page.wait_for_selector(
        "text=raw_items", timeout=60_000
    )  # the groups expanded (the lineage is taller than the page)
    page.get_by_text("Hide navigation").click()
    page.get_by_placeholder("Jump to…").locator("xpath=following::button[1]").click()
    page.wait_for_timeout(3_000)  # the layout settles
    page.mouse.move(600, 560)
    page.keyboard.down("Control")  # Ctrl + wheel zooms out until every group is in view
    page.mouse.wheel(0, 140)
    page.keyboard.up("Control")
    page.wait_for_load_state("networkidle")
    page.wait_for_timeout(5_000)  # each node's latest materialization loads
    page.screenshot(path=target)


#: The analysis assets pictured, with the markdown metadata entry each shows.
ANALYSIS = {"volume_stats": "charts", "actor_network": "top_actors_per_community"}
#: The days of volumes the demo's chart covers (the chart's own window).
CHART_DAYS = 30


def materialize_analysis() -> None:
    """The last month of ``volume_stats`` (one run, its backfill policy) and ``actor_network``, through the
    ``dagster`` CLI on this home, as the daemon's automation would materialize them."""
    prepare_dagster_home()
    today = datetime.now(UTC).date()
    dagster = [
        str(Path(sys.executable).parent / "dagster"),
        "asset",
        "materialize",
        "-m",
        "observatory_assets.definitions",
    ]
    first = (today - timedelta(days=CHART_DAYS - 1)).isoformat()
    for selection in (["volume_stats", "--partition-range", f"{first}...{today.isoformat()}"], ["actor_network"]):
        done = subprocess.run([*dagster, "--select", *selection], cwd=ROOT, capture_output=True, text=True)
        if done.returncode != 0:
            raise ScreenshotError(
                f"materializing {selection[0]} failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}"
            )


def analysis_asset(page: Page, base: str, asset: str, entry: str, target: Path) -> None:
    """The markdown ``entry`` of ``asset``'s latest materialization, opened from its overview's metadata."""
    page.goto(f"{base}/assets/{asset}", wait_until="networkidle")
    row = page.locator("tr", has=page.get_by_text(entry, exact=True)).first
    try:
        row.wait_for(timeout=60_000)
    except PlaywrightError:
        raise ScreenshotError(
            f"{asset} has no materialization to show (run with --demo, or let the daemon run)"
        ) from None
    row.get_by_text("Show Markdown").click()
    dialog = page.get_by_role("dialog")
    dialog.locator("img, table").first.wait_for(timeout=30_000)
    page.wait_for_timeout(1_000)  # the image decodes
    dialog.screenshot(path=target)


def take_screenshots(out: Path, port: int) -> list[Path]:
    """Write the five pictures into ``out``; returns their paths."""
    settings = platform_settings()
    if not settings.embedded_object_store:
        raise ScreenshotError("screenshots read the digest from the local object store (unset OBSERVATORY_S3_*)")
    digest = newest(settings.objects_root / "site" / "digests", "*.html", "published digest")
    out.mkdir(parents=True, exist_ok=True)
    graph, chart, page_top = out / "asset-graph.png", out / "trend-chart.png", out / "digest.png"
    with sync_playwright() as playwright, dagster_webserver(port) as base:
        browser = playwright.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        try:
            asset_graph(browser.new_page(viewport={"width": 1600, "height": 1150}), base, graph)
            reader = browser.new_page(viewport={"width": 760, "height": 1100})
            reader.goto(digest.as_uri(), wait_until="load")
            reader.screenshot(path=page_top)
            figure = reader.locator("figure").first
            if not figure.count():
                raise ScreenshotError(f"the digest {digest.name} shows no trend chart")
            figure.screenshot(path=chart)
            analysis_page = browser.new_page(viewport={"width": 1400, "height": 1000})
            for asset, entry in ANALYSIS.items():
                analysis_asset(analysis_page, base, asset, entry, out / f"{asset.replace('_', '-')}.png")
        except PlaywrightError as error:
            raise ScreenshotError(f"chromium: {str(error).splitlines()[0]}") from None
        finally:
            browser.close()
    return [graph, chart, page_top, *(out / f"{asset.replace('_', '-')}.png" for asset in ANALYSIS)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img", help="folder for the PNG files")
    parser.add_argument("--port", type=int, default=3099, help="port of the temporary Dagster webserver")
    parser.add_argument("--demo", action="store_true", help="run `observatory demo` on the home first")
    args = parser.parse_args(argv)
    try:
        if args.demo:
            observatory = Path(sys.executable).parent / "observatory"
            subprocess.run([str(observatory), "demo"], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
            materialize_analysis()
        for picture in take_screenshots(args.out, args.port):
            print(picture)
    except (ScreenshotError, subprocess.CalledProcessError) as error:
        print(f"screenshots: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
