"""``observatory sources poll`` stopped with SIGTERM while a server drips its answer one byte every 4 s: the
command exits soon, non-zero, with one line on stderr and no traceback, and the cycle leaves nothing behind
(no run left running, no hold kept, no charge, every source due again for the next cycle)."""

from __future__ import annotations

import json
import signal
import subprocess
import time

from sqlalchemy import text

from observatory_assets.defs.collection.catalog import load_catalog, sync_catalog
from observatory_assets.defs.credits import ledger
from observatory_assets.lib.feed_server import Document, FeedServer, Reply
from tests.support.helpers import ROOT, poll_until, write

FEED = b'<?xml version="1.0"?><rss version="2.0"><channel><title>T</title><item><guid>g-1</guid></item></channel></rss>'


def _drip():
    for _ in range(30):
        yield b"<"
        time.sleep(4)


def test_a_poll_stopped_by_sigterm_exits_at_once_and_leaves_its_sources_to_the_next_cycle(
    engine, dagster_env, tmp_path
):
    with FeedServer("127.0.0.1") as dripping, FeedServer("127.0.0.2") as good:
        dripping.routes["/drip"] = lambda _: Reply(200, {"Content-Type": "application/rss+xml"}, _drip())
        good.documents["/good"] = Document(FEED)
        catalog = {
            "sources": [
                {"name": "drip", "url": dripping.url("/drip"), "format": "rss", "cost": {"per_request": 1}},
                {"name": "good", "url": good.url("/good"), "format": "rss", "cost": {"per_request": 1}},
            ],
            "designs": [{"name": "watch", "sources": ["drip", "good"], "budget": {"credits": 100}}],
        }
        write(tmp_path / "sources" / "catalog.yaml", json.dumps(catalog))
        with engine.begin() as conn:
            sync_catalog(conn, load_catalog(tmp_path / "sources"))
        env = {**dagster_env, "OBSERVATORY_ALLOW_PRIVATE_NETWORKS": "1"}
        with subprocess.Popen(
            ["observatory", "sources", "poll", "--now"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        ) as poll:
            assert poll_until(lambda: dripping.requests or poll.poll() is not None, 120)
            assert poll.poll() is None, poll.communicate()
            time.sleep(1)  # the first byte is on its way: the fetch is in flight
            stopped = time.monotonic()
            poll.send_signal(signal.SIGTERM)
            out, err = poll.communicate(timeout=120)
            took = time.monotonic() - stopped

    assert took < 20, took  # the drip holds the fetch for its whole 30 s deadline
    lines = err.strip().splitlines()
    assert poll.returncode != 0 and len(lines) == 1, (poll.returncode, out, err)
    assert lines[0].startswith("observatory") and "Traceback" not in err
    with engine.connect() as conn:
        runs = conn.execute(text("SELECT status FROM collection_runs")).scalars().all()
        assert "running" not in runs
        watch = ledger.balance(conn, "watch")
        assert watch.held == 0 and watch.settled == 0 and watch.available == 100
        due = conn.execute(  # no answer was recorded: both are the next cycle's
            text("SELECT name FROM sources WHERE next_check_at IS NULL OR next_check_at <= now() ORDER BY name")
        ).scalars()
        assert list(due) == ["drip", "good"]
        charged = conn.execute(text("SELECT count(*) FROM credit_transactions WHERE kind = 'settle'")).scalar()
        assert charged == 0
