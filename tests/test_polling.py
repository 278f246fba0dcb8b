"""Polling against real HTTP servers on loopback, a real Postgres and a real Dagster instance."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import dagster as dg
import pytest
from cryptography.fernet import Fernet
from sqlalchemy import text

from observatory_assets.defs.collection.catalog import (
    CatalogError,
    design_states,
    load_catalog,
)
from observatory_assets.defs.collection.fetcher import next_check
from observatory_assets.defs.collection.jobs import poll_sources_job
from observatory_assets.defs.collection.polling import run_cycle
from observatory_assets.defs.collection.recovery import STALE_AFTER, recover_stale_runs, retry_failed_runs
from observatory_assets.defs.credits import ledger
from observatory_assets.defs.ingestion.collect import PathRefused, SourceRequest, collect
from observatory_assets.defs.ingestion.loading import ingest_collection_run
from observatory_assets.defs.webhooks.subscriptions import add_subscription
from observatory_assets.lib.feed_server import Document, Reply
from observatory_assets.lib.outbox import BUDGET_EXHAUSTED
from resources.outbound import OutboundClient, OutboundPolicy
from sensors.polling import polling_runs, polling_sensor
from tests.support.helpers import ROOT, catalog, run, source_state, sync, write

FEED = (
    '<?xml version="1.0"?><rss version="2.0"><channel><title>T</title><ttl>%d</ttl>'
    "<item><guid>%s-1</guid><title>Folketinget vedtager</title><pubDate>Wed, 02 Dec 2026 10:00:00 GMT</pubDate></item>"
    "<item><guid>%s-2</guid><title>Regeringen</title><pubDate>Wed, 02 Dec 2026 11:00:00 GMT</pubDate></item>"
    "</channel></rss>"
)


def feed(name: str, ttl: int = 0) -> bytes:
    return (FEED % (ttl, name, name)).encode()


def runs(engine) -> list:
    with engine.connect() as conn:
        return conn.execute(text("SELECT id, query_design_id, status, payloads FROM collection_runs ORDER BY id")).all()


def audits(engine, action: str) -> list:
    with engine.connect() as conn:
        return conn.execute(text("SELECT target, details FROM audit_log WHERE action = :a"), {"a": action}).all()


def test_catalog_errors_name_the_file_and_the_field(tmp_path):
    bad = catalog(tmp_path, [{"name": "a", "url": "ftp://x/feed", "format": "rss"}])
    with pytest.raises(CatalogError, match=r"^catalog.yaml: field sources.a.url: must be an http\(s\) URL$"):
        load_catalog(bad)
    bad = catalog(tmp_path, [{"name": "a", "url": "http://x/", "format": "rss", "poll": "soon"}])
    with pytest.raises(CatalogError, match="field sources.a.poll"):
        load_catalog(bad)
    bad = catalog(tmp_path, [], [{"name": "d", "sources": ["missing"]}])
    with pytest.raises(CatalogError, match="field designs.d.sources: unknown source 'missing'"):
        load_catalog(bad)


def test_sync_is_idempotent_and_keeps_polling_state(engine, tmp_path):
    directory = catalog(
        tmp_path,
        [{"name": "dr", "url": "http://127.0.0.1:1/a", "format": "rss", "credibility": 0.8, "language": "da"},
         {"name": "wire", "url": "http://127.0.0.1:1/b", "format": "rss", "aggregator": True}],
        [{"name": "politics", "title": "Danish politics", "terms": {"da": ["folketinget"]}, "sources": ["dr", "wire"],
          "budget": {"credits": 100, "valid_from": "2026-01-01", "valid_until": "2026-12-31"}}],
    )  # fmt: skip
    first = sync(engine, directory)
    with engine.begin() as conn:
        conn.execute(text("UPDATE sources SET etag = '\"v1\"' WHERE name = 'dr'"))
    again = sync(engine, directory)
    assert (first.sources, first.designs, again.sources, again.designs) == (2, 1, 2, 1)
    assert source_state(engine, "dr")["etag"] == '"v1"' and source_state(engine, "dr")["credibility"] == pytest.approx(
        0.8
    )
    with engine.connect() as conn:
        assert design_states(conn) == [
            {"name": "politics", "title": "Danish politics", "terms": {"da": ["folketinget"]},
             "sources": ["dr", "wire"], "budget": 100.0}
        ]  # fmt: skip
        assert conn.execute(text("SELECT count(*) FROM query_design_sources")).scalar() == 2
    write(
        directory / "catalog.yaml",
        json.dumps({"sources": [{"name": "dr", "url": "http://127.0.0.1:1/a", "format": "rss"}]}),
    )
    assert sync(engine, directory).deactivated == ["wire"]


def test_etag_then_304_makes_no_payload_and_no_run(engine, store, server, client, tmp_path):
    server.documents["/dr"] = Document(feed("dr"))
    sync(engine, catalog(tmp_path, [{"name": "dr", "url": server.url("/dr"), "format": "rss"}],
                         [{"name": "politics", "sources": ["dr"]}]))  # fmt: skip
    first = run_cycle(engine, store, client)
    assert (first.changed, first.items_collected, list(first.runs)) == (1, 2, ["politics"])
    second = run_cycle(engine, store, client, force=True)
    assert (second.requests_sent, second.not_modified, second.changed, second.runs) == (1, 1, 0, {})
    assert server.requests[-1][1]["If-None-Match"] == server.documents["/dr"].etag
    assert [r.status for r in runs(engine)] == ["completed"]
    state = source_state(engine, "dr")
    assert state["last_status"] == 304 and state["etag"] == server.documents["/dr"].etag and state["error_count"] == 0


def test_last_modified_alone_is_sent_back_and_answered_304(engine, store, server, client, tmp_path):
    modified = datetime(2026, 12, 1, tzinfo=UTC)

    def last_modified_only(handler):
        if handler.headers.get("If-Modified-Since") == format_datetime(modified, usegmt=True):
            return Reply(304)
        return Reply(200, {"Last-Modified": format_datetime(modified, usegmt=True)}, feed("lm"))

    server.routes["/lm"] = last_modified_only
    sync(engine, catalog(tmp_path, [{"name": "lm", "url": server.url("/lm"), "format": "rss"}]))
    assert run_cycle(engine, store, client).changed == 1
    assert run_cycle(engine, store, client, force=True).not_modified == 1
    assert "If-None-Match" not in server.requests[-1][1]


@pytest.mark.parametrize("as_date", [False, True])
def test_429_retry_after_is_honoured_per_host_even_with_now(engine, store, server, client, tmp_path, as_date):
    until = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=2)
    retry_after = format_datetime(until, usegmt=True) if as_date else "7200"
    server.routes["/busy"] = lambda _: Reply(429, {"Retry-After": retry_after})
    server.documents["/other"] = Document(feed("other"))
    sync(engine, catalog(tmp_path, [{"name": "busy", "url": server.url("/busy"), "format": "rss"},
                                    {"name": "other", "url": server.url("/other"), "format": "rss"}]))  # fmt: skip
    run_cycle(engine, store, client, per_host=1)
    state = source_state(engine, "busy")
    assert state["last_status"] == 429 and state["error_count"] == 1
    assert datetime.fromisoformat(state["next_check_at"]) >= until - timedelta(seconds=5)
    sent = len(server.requests)
    again = run_cycle(engine, store, client, force=True)
    assert len(server.requests) == sent and again.requests_sent == 0 and again.deferred_hosts == ["127.0.0.1"]


@pytest.mark.parametrize("status", [301, 308])
def test_a_permanent_redirect_rewrites_the_url_and_is_audited(engine, store, server, client, tmp_path, status):
    server.routes["/old"] = lambda _: Reply(status, {"Location": "/new"})
    server.documents["/new"] = Document(feed("moved"))
    sync(engine, catalog(tmp_path, [{"name": "moved", "url": server.url("/old"), "format": "rss"}]))
    report = run_cycle(engine, store, client)
    assert report.moved == ["moved"] and report.changed == 1
    assert source_state(engine, "moved")["url"] == server.url("/new")
    assert audits(engine, "source.moved")[0].details["to"] == server.url("/new")
    run_cycle(engine, store, client, force=True)
    assert server.requests[-1][0] == "/new"


def test_a_temporary_redirect_is_followed_without_rewriting(engine, store, server, client, tmp_path):
    server.routes["/feed"] = lambda _: Reply(302, {"Location": "/today"})
    server.documents["/today"] = Document(feed("temp"))
    sync(engine, catalog(tmp_path, [{"name": "temp", "url": server.url("/feed"), "format": "rss"}]))
    assert run_cycle(engine, store, client).changed == 1
    assert source_state(engine, "temp")["url"] == server.url("/feed") and audits(engine, "source.moved") == []


def test_410_deactivates_the_source_and_is_audited(engine, store, server, client, tmp_path):
    server.routes["/gone"] = lambda _: Reply(410)
    sync(engine, catalog(tmp_path, [{"name": "gone", "url": server.url("/gone"), "format": "rss"}]))
    assert run_cycle(engine, store, client).gone == ["gone"]
    assert source_state(engine, "gone")["active"] is False and audits(engine, "source.deactivated")[0].target == "gone"
    assert run_cycle(engine, store, client, force=True).due == 0


def test_a_redirect_loop_backs_off_exponentially_and_never_goes_silent(engine, store, server, client, tmp_path):
    server.routes["/a"] = lambda _: Reply(302, {"Location": "/b"})
    server.routes["/b"] = lambda _: Reply(302, {"Location": "/a"})
    sync(engine, catalog(tmp_path, [{"name": "loop", "url": server.url("/a"), "format": "rss"}]))
    waits = []
    for _ in range(4):
        started = datetime.now(UTC)
        run_cycle(engine, store, client, force=True, now=started)
        state = source_state(engine, "loop")
        waits.append((datetime.fromisoformat(state["next_check_at"]) - started).total_seconds())
    assert state["error_count"] == 4 and "redirect loop" in state["last_error"] and state["active"] is True
    assert 48 <= waits[0] <= 72 and 384 <= waits[3] <= 576  # 1 min doubling, ±20 % jitter
    assert runs(engine) == []


def test_jsonl_and_csv_feeds_are_polled_too(engine, store, server, client, tmp_path):
    server.documents["/items.csv"] = Document(
        b"id,title,published_at\n1,Folketinget,2026-12-01T10:00:00Z\n", "text/csv"
    )
    server.documents["/items.jsonl"] = Document(b'{"id": "1", "title": "t", "published_at": "2026-12-01T10:00:00Z"}\n')
    sync(engine, catalog(tmp_path, [{"name": "csv", "url": server.url("/items.csv"), "format": "csv"},
                                    {"name": "jsonl", "url": server.url("/items.jsonl"), "format": "jsonl"}]))  # fmt: skip
    report = run_cycle(engine, store, client)
    assert (report.changed, report.errors, report.items_collected) == (2, 0, 2)


def test_a_body_past_the_cap_is_an_error_not_a_payload(engine, store, server, tmp_path):
    server.documents["/big"] = Document(b"<rss>" + b"x" * 50_000 + b"</rss>")
    sync(engine, catalog(tmp_path, [{"name": "big", "url": server.url("/big"), "format": "rss"}]))
    with OutboundClient(OutboundPolicy(allow_private_networks=True, max_body_bytes=10_000)) as capped:
        report = run_cycle(engine, store, capped)
    assert report.errors == 1 and "larger than 10000 bytes" in source_state(engine, "big")["last_error"]
    assert runs(engine) == [] and list(store.list("collection_runs/")) == []


def test_a_shared_source_is_fetched_once_and_each_design_gets_at_most_one_run(engine, store, server, client, tmp_path):
    for name in ("a", "b", "c"):
        server.documents[f"/{name}"] = Document(feed(name))
    sync(engine, catalog(
        tmp_path,
        [{"name": n, "url": server.url(f"/{n}"), "format": "rss", "cost": {"per_request": 1}} for n in ("a", "b", "c")],
        [{"name": "one", "sources": ["a", "b"], "budget": {"credits": 10}},
         {"name": "two", "sources": ["b"], "budget": {"credits": 10}}],
    ))  # fmt: skip
    report = run_cycle(engine, store, client)
    assert sorted(path for path, _ in server.requests) == ["/a", "/b", "/c"]
    assert sorted(report.runs) == ["(no design)", "one"]  # b's payload is held by its first design's run
    with engine.connect() as conn:
        estimates = dict(conn.execute(text(
            "SELECT coalesce(d.name, '-'), r.credits_estimated FROM collection_runs r LEFT JOIN query_designs d ON d.id = r.query_design_id"
        )).all())  # fmt: skip
    assert {k: float(v) for k, v in estimates.items()} == {"one": 1.5, "two": 0.5, "-": 1.0}
    with engine.connect() as conn:  # design two paid its half of b's request: an empty run carries that charge
        two = conn.execute(text(
            "SELECT r.payloads, r.credits_used, r.ingested_at IS NOT NULL FROM collection_runs r "
            "JOIN query_designs d ON d.id = r.query_design_id WHERE d.name = 'two'"
        )).one()  # fmt: skip
    assert (two[0], float(two[1]), two[2]) == ([], 0.5, True)


def test_auto_interval_respects_the_feed_ttl_as_a_minimum(engine, store, server, client, tmp_path):
    server.documents["/ttl"] = Document(feed("ttl", ttl=180))
    sync(engine, catalog(tmp_path, [{"name": "ttl", "url": server.url("/ttl"), "format": "rss", "poll": "15m"}]))
    started = datetime.now(UTC)
    run_cycle(engine, store, client, now=started)
    wait = datetime.fromisoformat(source_state(engine, "ttl")["next_check_at"]) - started
    assert wait == timedelta(minutes=180)
    again = datetime.now(UTC)
    assert run_cycle(engine, store, client, force=True, now=again).not_modified == 1  # a 304 has no <ttl> of its own
    assert datetime.fromisoformat(source_state(engine, "ttl")["next_check_at"]) - again == timedelta(minutes=180)


def test_a_file_outside_the_collect_roots_is_refused_before_any_run(engine, store, monkeypatch, tmp_path):
    monkeypatch.setenv("OBSERVATORY_COLLECT_ROOTS", str(tmp_path / "allowed"))
    inside = write(
        tmp_path / "allowed" / "ok.jsonl", '{"id": "1", "title": "t", "published_at": "2026-12-01T00:00:00Z"}\n'
    )
    outside = write(tmp_path / "secret" / "x.jsonl", "{}\n")
    with pytest.raises(PathRefused, match="outside the directories"):
        collect(engine, store, [SourceRequest("x", "jsonl", path=str(outside))])
    with pytest.raises(PathRefused):
        collect(
            engine, store, [SourceRequest("x", "jsonl", path=str(tmp_path / "allowed" / ".." / "secret" / "x.jsonl"))]
        )
    assert runs(engine) == []
    assert collect(engine, store, [SourceRequest("x", "jsonl", path=str(inside))])


def test_cold_start_with_no_catalog_polls_nothing(engine, store, client, resources):
    report = run_cycle(engine, store, client, force=True)
    assert (report.due, report.requests_sent, report.runs) == (0, 0, {})
    with dg.DagsterInstance.ephemeral() as instance:
        result = polling_sensor(dg.build_sensor_context(instance=instance, resources=resources))
    assert result.run_requests == [] and "no source due" in result.skip_reason.skip_message


def test_the_sensor_starts_a_polling_run_for_due_sources_only(engine, store, server, client, resources, tmp_path):
    server.documents["/dr"] = Document(feed("dr"))
    sync(engine, catalog(tmp_path, [{"name": "dr", "url": server.url("/dr"), "format": "rss", "poll": "1h"}]))
    with dg.DagsterInstance.ephemeral() as instance:
        due = polling_sensor(dg.build_sensor_context(instance=instance, resources=resources))
        assert len(due.run_requests) == 1 and "1 sources due" in due.run_requests[0].tags["observatory/poll"]
        run_cycle(engine, store, client)
        idle = polling_sensor(dg.build_sensor_context(instance=instance, resources=resources))
        assert idle.run_requests == [] and "next check at" in idle.skip_reason.skip_message


KILLED_CYCLE = """
import sys
from resources.object_store import LocalObjectStore
from resources.outbound import OutboundClient, OutboundPolicy
from resources.postgres import engine_for
from observatory_assets.defs.collection.polling import run_cycle
engine = engine_for(sys.argv[1])
with OutboundClient(OutboundPolicy(allow_private_networks=True, total_timeout_s=60)) as client:
    run_cycle(engine, LocalObjectStore(__import__("pathlib").Path(sys.argv[2])), client, poll_run_id="killed")
"""


def test_kill_9_during_a_cycle_leaves_no_stuck_run_and_no_second_run(
    engine, store, database_url, server, client, tmp_path
):
    server.documents["/slow"] = Document(feed("slow"))
    sync(engine, catalog(tmp_path, [{"name": "slow", "url": server.url("/slow"), "format": "rss", "cost": {"per_request": 2}}],
                         [{"name": "watch", "sources": ["slow"], "budget": {"credits": 10}}]))  # fmt: skip
    first = run_cycle(engine, store, client)
    with engine.begin() as conn:
        ledger.settle_ingested_run(conn, first.runs["watch"])  # 2 credits: its request (items are free)
        conn.execute(text("UPDATE sources SET next_check_at = now() - interval '1 second'"))
    document = server.documents.pop("/slow")

    def stall_until_killed(_):
        time.sleep(30)
        return Reply(200, body=feed("slow"))

    server.routes["/slow"] = stall_until_killed
    cycle = subprocess.Popen(
        [sys.executable, "-c", KILLED_CYCLE, database_url, str(store.root)], cwd=ROOT, env=os.environ
    )
    deadline = time.monotonic() + 60
    while len(server.requests) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    os.kill(cycle.pid, signal.SIGKILL)
    cycle.wait()
    killed_id = runs(engine)[-1].id
    assert runs(engine)[-1].status == "running"
    assert run_cycle(engine, store, client).due == 0  # the killed cycle's source is leased, not fetched twice
    # its polling run is not in progress (the polling sensor reads it in the instance): its run is stale at once
    assert recover_stale_runs(engine, polling_runs=(datetime.now(UTC), ["another"])) == [killed_id]
    assert retry_failed_runs(engine, store) == {}  # a cycle's run is not fetched again as a run...
    assert source_state(engine, "slow")["next_check_at"] <= datetime.now(UTC).isoformat()  # ...its source is due again
    server.routes.pop("/slow")
    server.documents["/slow"] = document
    again = run_cycle(engine, store, client)  # the next cycle fetches it the polite way, and pays for it
    assert (again.due, again.requests_sent, again.not_modified) == (1, 1, 1)
    assert server.requests[-1][1]["If-None-Match"] == document.etag
    with engine.connect() as conn:
        kinds = conn.execute(
            text("SELECT kind, amount FROM credit_transactions WHERE collection_run_id = :run ORDER BY id"),
            {"run": killed_id},
        ).all()
        assert [(kind, float(amount)) for kind, amount in kinds] == [("reserve", 2.0), ("release", 2.0)]
        assert ledger.balance(conn, "watch").available == 6  # two requests charged: the killed one was not
    assert [(run.status, run.id == killed_id) for run in runs(engine)] == [
        ("completed", False), ("failed", True), ("completed", False)
    ]  # fmt: skip


def test_a_cycle_that_outlives_its_lease_records_nothing_twice(engine, store, server, client, tmp_path):
    def taken_for_dead_meanwhile(_):
        recover_stale_runs(engine, polling_runs=(datetime.now(UTC), []))
        return Reply(200, body=feed("late"))

    server.routes["/late"] = taken_for_dead_meanwhile
    sync(engine, catalog(tmp_path, [{"name": "late", "url": server.url("/late"), "format": "rss", "cost": {"per_request": 1}}],
                         [{"name": "watch", "sources": ["late"], "budget": {"credits": 10}}]))  # fmt: skip
    late = run_cycle(engine, store, client, poll_run_id="late")  # taken for dead while it fetched: nothing recorded
    assert late.abandoned and late.runs == {}
    assert source_state(engine, "late")["last_checked_at"] is None
    server.routes.pop("/late")
    server.documents["/late"] = Document(feed("late"))
    assert run_cycle(engine, store, client).changed == 1
    with engine.connect() as conn:
        assert ledger.balance(conn, "watch").held == 1  # the live cycle's hold; the abandoned one's was released


def test_a_budget_that_runs_out_mid_day_stops_before_any_request(
    engine, store, server, client, resources, tmp_path, monkeypatch
):
    monkeypatch.setenv("OBSERVATORY_SECRET_KEY", Fernet.generate_key().decode())
    with engine.begin() as conn:
        add_subscription(conn, "https://hooks.example.org/budget", [BUDGET_EXHAUSTED], name="budget")
    for name in ("a", "b"):
        server.documents[f"/{name}"] = Document(feed(name))
    sync(engine, catalog(
        tmp_path,
        [{"name": n, "url": server.url(f"/{n}"), "format": "rss", "cost": {"per_request": 1}} for n in ("a", "b")],
        [{"name": "watch", "sources": ["a", "b"], "budget": {"credits": 3, "valid_from": "2026-01-01", "valid_until": "2099-12-31"}}],
    ))  # fmt: skip
    first = run_cycle(engine, store, client)
    assert first.requests_sent == 2 and first.runs
    with engine.begin() as conn:
        ledger.settle_ingested_run(conn, first.runs["watch"])
        assert ledger.balance(conn, "watch").available == 1
        conn.execute(text("UPDATE sources SET next_check_at = now() - interval '1 second'"))  # due again
    sent = len(server.requests)
    with dg.DagsterInstance.ephemeral() as instance:
        skipped = polling_sensor(dg.build_sensor_context(instance=instance, resources=resources))
    assert skipped.run_requests == []
    assert skipped.skip_reason.skip_message == "design watch is short of 1.00 credits (estimate 2.0000)"
    second = run_cycle(engine, store, client, force=True)
    assert len(server.requests) == sent and second.requests_sent == 0 and second.runs == {}
    assert second.shortfalls == ["design watch is short of 1.00 credits (estimate 2.0000)"]
    assert len(runs(engine)) == 1
    assert {row.target for row in audits(engine, "credits.shortfall")} == {"watch"}
    with engine.connect() as conn:  # the hard stop queued one webhook in its own transaction
        messages = conn.execute(text("SELECT event_type, payload FROM webhook_messages")).all()
    assert [(m.event_type, m.payload["data"]) for m in messages] == [
        (BUDGET_EXHAUSTED, {"budget": "watch", "estimate": "2.0000", "shortfall": "1.00"})
    ]


def test_an_exhausted_budget_is_audited_and_announced_once_per_exhaustion(
    engine, store, server, client, resources, tmp_path, monkeypatch
):
    monkeypatch.setenv("OBSERVATORY_SECRET_KEY", Fernet.generate_key().decode())
    with engine.begin() as conn:
        add_subscription(conn, "https://hooks.example.org/budget", [BUDGET_EXHAUSTED], name="budget")
    server.documents["/a"] = Document(feed("a"))
    sync(engine, catalog(tmp_path, [{"name": "a", "url": server.url("/a"), "format": "rss", "cost": {"per_request": 1}}],
                         [{"name": "watch", "sources": ["a"], "budget": {"credits": 1}}]))  # fmt: skip
    first = run_cycle(engine, store, client)
    with engine.begin() as conn:
        ledger.settle_ingested_run(conn, first.runs["watch"])

    def announced() -> tuple[int, int]:
        with engine.connect() as conn:
            messages = conn.execute(text("SELECT count(*) FROM webhook_messages")).scalar_one()
        return len(audits(engine, "credits.shortfall")), messages

    def stay_short(cycles: int) -> None:
        for _ in range(cycles):
            assert run_cycle(engine, store, client, force=True).shortfalls
            with dg.DagsterInstance.ephemeral() as instance:
                assert (
                    polling_sensor(dg.build_sensor_context(instance=instance, resources=resources)).run_requests == []
                )

    stay_short(3)
    assert announced() == (1, 1)  # one exhaustion: one audit, one webhook, however many cycles find it
    with engine.begin() as conn:
        ledger.allocate(
            conn, ledger.find_design(conn, "watch")[0], 1, datetime.now(UTC).date(), datetime.now(UTC).date()
        )
    assert run_cycle(engine, store, client, force=True).requests_sent == 1  # funded again: a 304, settled at once
    stay_short(2)
    assert announced() == (2, 2)  # a second exhaustion is announced again


def test_the_cli_syncs_lists_shows_and_polls_through_dagster(dagster_env, server, tmp_path):
    server.documents["/dr"] = Document(feed("dr"))
    directory = catalog(tmp_path, [{"name": "dr", "url": server.url("/dr"), "format": "rss"}],
                        [{"name": "politics", "title": "Politics", "terms": {"da": ["folketinget"]}, "sources": ["dr"]}])  # fmt: skip
    env = {**dagster_env, "OBSERVATORY_SOURCES_DIR": str(directory), "OBSERVATORY_ALLOW_PRIVATE_NETWORKS": "1"}
    assert "1 sources and 1 designs synced" in run(env, "observatory", "sources", "sync")
    first = run(env, "observatory", "sources", "poll")
    assert "1 changed" in first and "collection run 1 for politics" in first
    second = run(env, "observatory", "sources", "poll", "--now")
    assert "1 not modified (304), 0 changed" in second
    [listed] = [json.loads(line) for line in run(env, "observatory", "sources", "list", "--json").splitlines()]
    assert listed["name"] == "dr" and listed["last_status"] == 304 and listed["etag"] == server.documents["/dr"].etag
    assert listed["platform"] == "rss"
    assert set(listed) == {"name", "platform", "url", "active", "etag", "last_modified", "last_status", "last_checked_at",
                           "next_check_at", "error_count", "last_error"}  # fmt: skip
    assert json.loads(run(env, "observatory", "sources", "show", "dr"))["format"] == "rss"
    [design] = [json.loads(line) for line in run(env, "observatory", "designs", "list", "--json").splitlines()]
    assert design == {
        "name": "politics",
        "title": "Politics",
        "terms": {"da": ["folketinget"]},
        "sources": ["dr"],
        "budget": None,
    }
    write(directory / "catalog.yaml", json.dumps({"sources": [{"name": "x", "url": "http://h/", "format": "xml"}]}))
    bad = subprocess.run(["observatory", "sources", "sync"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
    assert bad.stderr.startswith("observatory: catalog.yaml: field sources.x.format:")
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        assert len(instance.get_runs(filters=dg.RunsFilter(job_name="poll_sources_job"))) == 2


def test_only_an_aggregator_names_outlets_and_never_takes_over_a_described_source(engine, store, tmp_path):
    sync(engine, catalog(tmp_path, [
        {"name": "dr", "url": "http://127.0.0.1:1/dr", "format": "jsonl", "credibility": 0.9},
        {"name": "wire", "url": "http://127.0.0.1:1/wire", "format": "jsonl", "aggregator": True, "credibility": 0.6},
    ]))  # fmt: skip
    row = '{"id": "%s", "title": "t%s", "source": "%s", "published_at": "2026-12-01T10:00:00Z"}\n'
    files = {
        "dr": write(tmp_path / "dr.jsonl", row % (1, 1, "Reuters")),
        "wire": write(tmp_path / "wire.jsonl", row % (1, 2, "dr") + row % (2, 3, "Reuters")),
    }
    for name, path in files.items():
        ingest_collection_run(engine, store, collect(engine, store, [SourceRequest(name, "jsonl", path=str(path))]))
    with engine.connect() as conn:
        items = conn.execute(
            text("SELECT r.title, s.name FROM raw_items r JOIN sources s ON s.id = r.source_id ORDER BY r.title")
        ).all()
        credibility = conn.execute(text("SELECT credibility FROM sources WHERE name = 'dr'")).scalar_one()
    # dr is no aggregator: its row stays its own; wire's row naming dr does not take over dr's keys
    assert [tuple(item) for item in items] == [("t1", "dr"), ("t2", "wire"), ("t3", "Reuters")]
    assert credibility == pytest.approx(0.9)


def test_the_project_catalog_is_valid_and_a_source_without_url_is_described_not_polled(engine, store, client):
    loaded = load_catalog(ROOT / "sources")
    assert loaded.sources["dr-nyheder"][1].credibility == 0.8 and loaded.sources["politiken"][1].url is None
    sync(engine, ROOT / "sources")
    assert source_state(engine, "social-stream")["credibility"] == pytest.approx(0.3)
    with engine.begin() as conn:  # no request leaves this test: only the URL-less sources stay active
        conn.execute(text("UPDATE sources SET active = false WHERE url IS NOT NULL"))
    assert run_cycle(engine, store, client, force=True).due == 0


def test_a_fixed_interval_counts_from_when_the_check_was_due_not_from_when_it_ran():
    """A ``poll: 1m`` source checked late (a sensor tick, a run's start-up) is next due a minute after it
    was due, so its checks stay a minute apart; a check a whole interval late, an error or a publisher's
    floor count from now."""
    due = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
    late = due + timedelta(seconds=14)
    minute, auto = 60, timedelta(hours=1)
    assert next_check(late, minute, auto, None, 0, due) == due + timedelta(minutes=1)
    assert next_check(due + timedelta(seconds=75), minute, auto, None, 0, due) == due + timedelta(seconds=135)
    assert next_check(late, minute, auto, None, 0, None) == late + timedelta(minutes=1)
    assert next_check(late, minute, auto, 300, 0, due) == late + timedelta(minutes=5)
    assert next_check(late, minute, auto, None, 2, due) > late


def test_a_one_minute_source_is_next_due_a_minute_after_it_was_due(engine, store, server, client, tmp_path):
    """The cycle claims a due source (leasing it), yet its next check counts from when it was due."""
    server.documents["/minute"] = Document(feed("minute"))
    sync(engine, catalog(tmp_path, [{"name": "minute", "url": server.url("/minute"), "format": "rss", "poll": "1m"}]))
    due = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=20)
    with engine.begin() as conn:
        conn.execute(text("UPDATE sources SET next_check_at = :due WHERE name = 'minute'"), {"due": due})
    run_cycle(engine, store, client)
    with engine.connect() as conn:
        next_due = conn.execute(text("SELECT next_check_at FROM sources WHERE name = 'minute'")).scalar_one()
    assert next_due == due + timedelta(minutes=1)


def test_the_sensor_waits_for_a_live_polling_run_but_never_for_one_older_than_a_cycles_lease(resources):
    """A polling run STARTED for ever (its worker killed, run monitoring off or not acting yet) stops
    holding the next cycle back once it is older than a cycle's lease."""
    with dg.DagsterInstance.ephemeral() as instance:
        stuck = instance.create_run_for_job(poll_sources_job, status=dg.DagsterRunStatus.STARTED)
        with dg.build_sensor_context(instance=instance, resources=resources) as context:
            waiting = polling_sensor(context)
            assert waiting.skip_reason.skip_message == f"polling run {stuck.run_id} is still in progress"
            past_the_lease = datetime.now(UTC) + STALE_AFTER + timedelta(seconds=1)
            assert polling_runs(context, past_the_lease) == (None, [stuck.run_id])
