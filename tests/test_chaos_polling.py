"""Chaos: polling cycles killed with ``kill -9`` at random points, again and again, against loopback feeds
that keep publishing, and polling resumes by itself each time: the polling sensor recovers the dead cycle's
runs (no collection run left running, no source left leased), nothing is charged twice (a killed cycle's
requests are not charged; every answer recorded is charged once), and no item is lost.

The randomness is seeded (``OBSERVATORY_CHAOS_SEED`` to replay a run); the seed is printed."""

from __future__ import annotations

import json
import os
import random
import signal
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import dagster as dg
import pytest
from sqlalchemy import text

from observatory_assets.defs.collection.catalog import load_catalog, sync_catalog
from observatory_assets.defs.collection.polling import CLAIM_LEASE, run_cycle
from observatory_assets.defs.credits import ledger
from observatory_assets.defs.ingestion.loading import ingest_collection_run
from observatory_assets.lib.feed_server import Document, FeedServer
from resources.object_store import LocalObjectStore
from resources.outbound import OutboundClient, OutboundPolicy
from resources.postgres import engine_for
from sensors.polling import polling_sensor
from tests.support.forked import Forked
from tests.support.helpers import poll_until, write

KILLS = 20
FEEDS = ("dr", "tv2", "wire")
PER_REQUEST = Decimal("0.01")
#: How long a feed takes to answer: a kill that follows a request's arrival lands while the cycle fetches.
ANSWER_DELAY_S = 0.8
#: Requests a cycle sends at once to one host (the feeds share 127.0.0.1): the default ``per_host``.
PER_HOST = 2
#: Seconds a polling cycle may take to start: a guard, not a speed target.
STARTS_WITHIN_S = 60


def cycle(database_url: str, objects_root: Path, poll_run_id: str) -> None:
    """One polling cycle, as a process of its own (the one the test kills)."""
    with OutboundClient(OutboundPolicy(allow_private_networks=True, total_timeout_s=60)) as client:
        run_cycle(engine_for(database_url), LocalObjectStore(objects_root), client, poll_run_id=poll_run_id)


def rss(name: str, items: int) -> bytes:
    entries = "".join(
        f"<item><guid>{name}-{n}</guid><title>{name} {n}</title><pubDate>Wed, 02 Dec 2026 10:00:00 GMT</pubDate></item>"
        for n in range(1, items + 1)
    )
    return f'<?xml version="1.0"?><rss version="2.0"><channel><title>{name}</title>{entries}</channel></rss>'.encode()


def kill_somewhere(cycle: Forked, server: FeedServer, rng: random.Random) -> tuple[str, bool]:
    """Kill the cycle at a random point: any time after it starts, or just after its k-th request
    arrived; (where, whether it was killed while it fetched: its first requests arrived, none answered yet,
    each answer taking ``ANSWER_DELAY_S``)."""
    sent_before = len(server.requests)
    assert cycle.started(STARTS_WITHIN_S), "the polling cycle did not start"
    if rng.random() < 0.5:
        time.sleep(rng.uniform(0, 3))
        point = "at a random moment"
    else:
        k = rng.randint(1, len(FEEDS))
        poll_until(lambda: len(server.requests) - sent_before >= k or cycle.poll() is not None, 60, 0.02)
        point = f"after request {k}"
    fetching = cycle.poll() is None and 1 <= len(server.requests) - sent_before <= PER_HOST
    if cycle.poll() is None:
        os.kill(cycle.pid, signal.SIGKILL)
    cycle.wait()
    return point, fetching


@pytest.mark.slow
def test_polling_killed_at_random_points_resumes_by_itself_charges_once_and_loses_nothing(
    engine, store, database_url, resources, tmp_path
):
    seed = int(os.environ.get("OBSERVATORY_CHAOS_SEED", time.time_ns() % 2**32))
    print(f"chaos seed: {seed} (OBSERVATORY_CHAOS_SEED={seed} replays it)")
    rng = random.Random(seed)
    published = dict.fromkeys(FEEDS, 1)
    with FeedServer() as server:
        for name in FEEDS:
            server.documents[f"/{name}"] = Document(rss(name, 1))

        def slow_answer(handler):
            time.sleep(ANSWER_DELAY_S)
            return handler._document_reply()

        for name in FEEDS:
            server.routes[f"/{name}"] = slow_answer
        catalog = {
            "sources": [
                {"name": n, "url": server.url(f"/{n}"), "format": "rss", "poll": "1h", "cost": {"per_request": 0.01}}
                for n in FEEDS
            ],
            "designs": [{"name": "watch", "sources": list(FEEDS), "budget": {"credits": 1000}}],
        }
        write(tmp_path / "sources" / "catalog.yaml", json.dumps(catalog))
        with engine.begin() as conn:
            sync_catalog(conn, load_catalog(tmp_path / "sources"))
        points, killed_mid_cycle, killed_fetching = [], 0, 0
        for kill in range(KILLS):
            for name in FEEDS:  # the feeds keep publishing: each round some of them a new item
                if rng.random() < 0.7:
                    published[name] += 1
                    server.documents[f"/{name}"] = Document(rss(name, published[name]))
            with Forked(cycle, database_url, store.root, f"chaos-{kill}") as running:
                point, fetching = kill_somewhere(running, server, rng)
            points.append(point)
            killed_fetching += fetching
            with engine.connect() as conn:
                killed_mid_cycle += conn.execute(
                    text("SELECT count(*) > 0 FROM collection_runs WHERE status = 'running'")
                ).scalar_one()
            with dg.DagsterInstance.ephemeral() as instance:  # its polling run no longer in progress: the sensor looks
                looked = polling_sensor(dg.build_sensor_context(instance=instance, resources=resources))
            with engine.begin() as conn:
                assert conn.execute(text("SELECT count(*) FROM collection_runs WHERE status = 'running'")).scalar() == 0
                leased = conn.execute(  # a source no answer rescheduled is due now: none is left leased
                    text("SELECT count(*) FROM sources WHERE next_check_at > now() AND next_check_at <= :lease"),
                    {"lease": datetime.now(UTC) + CLAIM_LEASE},
                ).scalar()
                assert leased == 0
                if looked.run_requests == []:  # every source was answered: an hour passes
                    conn.execute(text("UPDATE sources SET next_check_at = now() - interval '1 second'"))
        print(f"{KILLS} kills, {killed_mid_cycle} mid-cycle ({killed_fetching} while fetching): {', '.join(points)}")
        assert killed_mid_cycle >= killed_fetching >= 1
        with engine.begin() as conn:
            conn.execute(text("UPDATE sources SET next_check_at = now() - interval '1 second'"))
        with OutboundClient(OutboundPolicy(allow_private_networks=True, total_timeout_s=60)) as client:
            final = run_cycle(engine, store, client)  # left alone at last
        assert final.due == len(FEEDS) and final.errors == 0
        requests_received = len(server.requests)

    with engine.begin() as conn:
        completed = conn.execute(
            text("SELECT id FROM collection_runs WHERE status = 'completed' AND ingested_at IS NULL ORDER BY id")
        ).scalars()
        run_ids = list(completed)
    for run_id in run_ids:
        ingest_collection_run(engine, store, run_id)
        with engine.begin() as conn:
            ledger.settle_ingested_run(conn, run_id)
    with engine.connect() as conn:
        items = dict(
            conn.execute(
                text("SELECT s.name, count(*) FROM raw_items r JOIN sources s ON s.id = r.source_id GROUP BY s.name")
            ).all()
        )
        assert items == {name: count for name, count in published.items() if count}  # no item lost, none twice
        answers = conn.execute(text("SELECT count(*) FROM source_fetches")).scalar()
        settled = conn.execute(
            text("SELECT coalesce(sum(amount), 0) FROM credit_transactions WHERE kind = 'settle'")
        ).scalar()
        # every recorded answer charged once; a killed cycle's requests not at all (at least once, never twice)
        assert settled == answers * PER_REQUEST and answers <= requests_received
        killed = conn.execute(
            text(
                """
                SELECT count(*) FROM collection_runs r WHERE r.status = 'failed'
                   AND (EXISTS (SELECT 1 FROM credit_transactions t WHERE t.collection_run_id = r.id AND t.kind = 'settle')
                        OR NOT EXISTS (SELECT 1 FROM credit_transactions t WHERE t.collection_run_id = r.id AND t.kind = 'release'))
                """
            )
        ).scalar()
        assert killed == 0  # a killed cycle's hold given back whole
        assert ledger.balance(conn, "watch").held == 0
        assert ledger.ledger_violations(conn) == {
            "negative_balance": [],
            "held_above_allocated": [],
            "totals_off_ledger": [],
        }
        stuck = conn.execute(text("SELECT count(*) FROM sources WHERE NOT active OR error_count > 0")).scalar()
        assert stuck == 0
