"""A polling cycle against hostile servers on loopback: a decompression bomb, a body dripping a byte at a
time, a Retry-After in the year 9999. Each is a failed fetch recorded on its source, and the cycle goes on."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import brotli
import pytest
from sqlalchemy import text

from observatory_assets.defs.collection.catalog import load_catalog, source_states, sync_catalog
from observatory_assets.defs.collection.polling import run_cycle
from observatory_assets.lib.feed_server import Document, FeedServer, Reply
from resources.outbound import OutboundClient, OutboundPolicy
from tests.support.helpers import write

FEED = b'<?xml version="1.0"?><rss version="2.0"><channel><title>T</title><item><guid>g-1</guid></item></channel></rss>'


def _drip(chunks: int, every_s: float):
    for _ in range(chunks):
        yield b"<"
        time.sleep(every_s)


@pytest.fixture
def servers():
    with FeedServer("127.0.0.1") as one, FeedServer("127.0.0.2") as two:
        yield one, two


def _sync(engine, tmp_path, sources: dict[str, str]) -> None:
    directory = tmp_path / "sources"
    entries = [{"name": name, "url": url, "format": "rss"} for name, url in sources.items()]
    write(directory / "catalog.yaml", json.dumps({"sources": entries, "designs": []}))
    with engine.begin() as conn:
        sync_catalog(conn, load_catalog(directory))


def _states(engine) -> dict[str, dict]:
    with engine.connect() as conn:
        return {state["name"]: state for state in source_states(conn)}


def test_a_bomb_and_a_drip_are_failed_fetches_and_the_cycle_goes_on(engine, store, servers, tmp_path):
    one, two = servers
    bomb = brotli.compress(bytes(64 * 1024**2), quality=5)
    one.routes["/bomb"] = lambda _: Reply(200, {"Content-Encoding": "br"}, bomb)
    one.routes["/drip"] = lambda _: Reply(200, {"Content-Type": "application/rss+xml"}, _drip(60, 0.5))
    two.documents["/good"] = Document(FEED)
    _sync(engine, tmp_path, {"bomb": one.url("/bomb"), "drip": one.url("/drip"), "good": two.url("/good")})
    policy = OutboundPolicy(allow_private_networks=True, total_timeout_s=3, max_body_bytes=4 * 1024**2)
    started = time.monotonic()
    with OutboundClient(policy) as client:
        report = run_cycle(engine, store, client, per_host=2)
    assert time.monotonic() - started < 20  # the drip held the cycle for its 30 s before
    assert report.changed == 1 and report.errors == 2
    states = _states(engine)
    assert "larger than" in states["bomb"]["last_error"] and "timed out" in states["drip"]["last_error"]
    now = datetime.now(UTC)
    for name in ("bomb", "drip"):
        assert states[name]["error_count"] == 1  # backs off like any other error
        assert now < datetime.fromisoformat(states[name]["next_check_at"]) < now + timedelta(minutes=5)
    assert states["good"]["error_count"] == 0 and states["good"]["last_error"] is None


def test_a_retry_after_in_the_year_9999_holds_a_host_a_day_at_most(engine, store, servers, tmp_path):
    one, _ = servers
    one.routes["/busy"] = lambda _: Reply(503, {"Retry-After": "Fri, 31 Dec 9999 23:59:59 GMT"})
    _sync(engine, tmp_path, {"busy": one.url("/busy")})
    with OutboundClient(OutboundPolicy(allow_private_networks=True, total_timeout_s=5)) as client:
        run_cycle(engine, store, client)
    with engine.connect() as conn:
        until = conn.execute(text("SELECT retry_after_until FROM polling_hosts WHERE host = '127.0.0.1'")).scalar_one()
    assert until <= datetime.now(UTC) + timedelta(hours=24, minutes=1)
