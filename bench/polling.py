"""Benchmark: one polling cycle over 1,000 feeds on 50 loopback hosts, half of them unchanged.

A child process serves the feeds with ETags on ``127.0.0.2``–``127.0.0.51`` (Linux routes all of
127.0.0.0/8 to loopback), 20 feeds per host, spread over 10 query designs. A first cycle collects
every feed and stores its validators; then half the feeds change, and the measured cycle checks all
1,000 with a per-host limit of 2: unchanged feeds should be answered 304, changed ones fetched and
filed as at most one collection run per design.

Prints one JSON object: ``feeds``, ``seconds``, ``feeds_per_s``, ``conditional_hit_ratio``
(unchanged feeds answered 304 ÷ unchanged feeds), ``requests_sent``, ``runs_created``,
``peak_rss_mb`` (the polling process), ``load_avg_1m`` (the machine's, as the cycle started). Targets:
≥ 500 feeds/s, hit ratio 1.0, runs ≤ designs, peak RSS < 300 MB, at 1,000 feeds and at 10,000 (``--feeds
10000``: 200 feeds a host). Usage: python bench/polling.py [--feeds 1000] [--hosts 50]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import peak_rss_mb, scratch_database  # noqa: E402

from observatory_assets.defs.collection.catalog import load_catalog, sync_catalog  # noqa: E402
from observatory_assets.defs.collection.polling import run_cycle  # noqa: E402
from observatory_assets.lib.feed_server import Document, FeedServer, Reply  # noqa: E402
from resources.object_store import LocalObjectStore  # noqa: E402
from resources.outbound import OutboundClient, OutboundPolicy  # noqa: E402
from resources.postgres import engine_for  # noqa: E402

DESIGNS = 10
ITEMS_PER_FEED = 10


def host_address(n: int) -> str:
    return f"127.0.0.{n + 2}"


def feed_body(feed: int, version: int) -> bytes:
    items = "".join(
        f"<item><guid>f{feed}-v{version}-{i}</guid><title>Feed {feed} item {i} version {version}</title>"
        f"<description>{'Folketinget og regeringen forhandler om finansloven. ' * 8}</description>"
        f"<pubDate>Wed, 02 Dec 2026 {i:02d}:00:00 GMT</pubDate></item>"
        for i in range(ITEMS_PER_FEED)
    )
    return (
        f'<?xml version="1.0"?><rss version="2.0"><channel><title>Feed {feed}</title>{items}</channel></rss>'.encode()
    )


def serve(feeds: int, hosts: int, port: int) -> None:
    """The child: every host serves its feeds; ``GET /__change`` gives every even feed a new version."""
    servers = [FeedServer(host_address(h), port).start() for h in range(hosts)]
    for feed in range(feeds):
        servers[feed % hosts].documents[f"/feed/{feed}.xml"] = Document(feed_body(feed, 1))

    def change(server: FeedServer):
        def handler(_):
            for path in list(server.documents):
                feed = int(path.rsplit("/", 1)[1].split(".")[0])
                if feed % 2 == 0:
                    server.documents[path] = Document(feed_body(feed, 2))
            return Reply(200, body=b"changed")

        return handler

    for server in servers:
        server.routes["/__change"] = change(server)
    print("serving", flush=True)
    sys.stdin.read()  # until the parent closes our stdin
    for server in servers:
        server.stop()


def catalog(directory: Path, feeds: int, hosts: int, port: int) -> Path:
    import yaml

    sources = [
        {"name": f"feed-{feed}", "url": f"http://{host_address(feed % hosts)}:{port}/feed/{feed}.xml", "format": "rss"}
        for feed in range(feeds)
    ]
    designs = [
        {"name": f"design-{d}", "sources": [f"feed-{feed}" for feed in range(d, feeds, DESIGNS)]}
        for d in range(DESIGNS)
    ]
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "bench.yaml").write_text(yaml.safe_dump({"sources": sources, "designs": designs}), encoding="utf-8")
    return directory


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--feeds", type=int, default=1000)
    parser.add_argument("--hosts", type=int, default=50)
    parser.add_argument("--port", type=int, default=18431)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.feeds, args.hosts, args.port)
        return

    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", f"--feeds={args.feeds}", f"--hosts={args.hosts}", f"--port={args.port}"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout.readline().strip() == "serving"
        policy = OutboundPolicy.from_settings(allowed_networks=("127.0.0.0/8",))
        with scratch_database() as url, tempfile.TemporaryDirectory() as scratch, OutboundClient(policy) as client:
            engine = engine_for(url)
            store = LocalObjectStore(Path(scratch) / "objects")
            with engine.begin() as conn:
                sync_catalog(conn, load_catalog(catalog(Path(scratch) / "sources", args.feeds, args.hosts, args.port)))
            first = run_cycle(engine, store, client, force=True, per_host=2)
            assert first.changed == args.feeds, first
            for host in range(args.hosts):
                client.request("GET", f"http://{host_address(host)}:{args.port}/__change")
            load = os.getloadavg()[0]
            started = time.perf_counter()
            measured = run_cycle(engine, store, client, force=True, per_host=2)
            seconds = time.perf_counter() - started
    finally:
        server.stdin.close()
        server.wait(timeout=30)
    unchanged = args.feeds - (args.feeds + 1) // 2
    print(
        json.dumps(
            {
                "feeds": args.feeds,
                "hosts": args.hosts,
                "seconds": round(seconds, 3),
                "feeds_per_s": round(args.feeds / seconds, 1),
                "conditional_hit_ratio": round(measured.not_modified / unchanged, 4) if unchanged else None,
                "requests_sent": measured.requests_sent,
                "changed": measured.changed,
                "errors": measured.errors,
                "runs_created": len(measured.runs),
                "designs": DESIGNS,
                "peak_rss_mb": round(peak_rss_mb(), 1),
                "load_avg_1m": round(load, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
