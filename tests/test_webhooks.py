"""Webhooks against real receivers on loopback: Standard Webhooks signatures verified by the
``standardwebhooks`` library, retries with one webhook-id, 410, Retry-After, secret rotation, the
transactional outbox, kill -9 during a delivery run, and no secret in any output or log."""

import json
import os
import signal
import subprocess
import threading
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import text
from standardwebhooks.webhooks import Webhook

from observatory_assets.defs.webhooks.delivery import Attempt, deliver_due, next_delay, prune
from observatory_assets.defs.webhooks.subscriptions import (
    WebhookConfigError,
    add_subscription,
    remove_subscription,
    rotate_secret,
)
from observatory_assets.lib.outbox import EXPORT_COMPLETED, emit
from resources.http_headers import retry_after_seconds
from resources.postgres import engine_for
from tests.support.cli import invoke
from tests.support.helpers import ROOT


class Receiver:
    """An HTTP server on 127.0.0.1 answering each POST with the next scripted status (then 200)."""

    def __init__(self, script: list[tuple[int, dict]] | None = None, delay_s: float = 0.0):
        self.script = list(script or [])
        self.delay_s = delay_s
        self.received: list[tuple[dict, bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                length = int(self.headers.get("content-length", 0))
                body = self.rfile.read(length)
                if len(body) < length:  # the sender died mid-request (kill -9): nothing was delivered
                    return
                receiver.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                time.sleep(receiver.delay_s)
                status, headers = receiver.script.pop(0) if receiver.script else (200, {})
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format, *args):  # noqa: A002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receivers():
    started: list[Receiver] = []

    def start(*args, **kwargs) -> Receiver:
        started.append(Receiver(*args, **kwargs))
        return started[-1]

    yield start
    for receiver in started:
        receiver.close()


@pytest.fixture
def webhook_env(monkeypatch):
    key = Fernet.generate_key().decode()
    monkeypatch.setenv("OBSERVATORY_SECRET_KEY", key)
    monkeypatch.setenv("OBSERVATORY_ALLOW_PRIVATE_NETWORKS", "1")
    monkeypatch.setenv("OBSERVATORY_WEBHOOK_RETRY_SCHEDULE", "0,0,0")
    return key


def _subscribe(engine, url, name="hook"):
    with engine.begin() as conn:
        return add_subscription(conn, url, [EXPORT_COMPLETED], name=name)


def _emit(engine, n=1):
    with engine.begin() as conn:
        for i in range(n):
            emit(conn, EXPORT_COMPLETED, {"export": i, "url": f"https://example.org/exports/{i}"})


def _log(engine):
    with engine.connect() as conn:
        return conn.execute(
            text("SELECT attempt, status_code, outcome, next_attempt_at FROM webhook_deliveries ORDER BY id")
        ).all()


def test_fail_twice_then_succeed_three_signed_attempts_with_one_webhook_id(engine, webhook_env, receivers):
    receiver = receivers([(500, {}), (503, {})])
    _, secret = _subscribe(engine, receiver.url)
    _emit(engine)
    result = deliver_due(engine)
    assert (result.attempted, result.delivered, result.retrying) == (3, 1, 2)
    assert len(receiver.received) == 3 and len({h["webhook-id"] for h, _ in receiver.received}) == 1
    for headers, body in receiver.received:
        payload = Webhook(secret).verify(body, headers)
        assert payload["type"] == EXPORT_COMPLETED and payload["data"]["export"] == 0
    assert [(a, code, outcome) for a, code, outcome, _ in _log(engine)] == [
        (1, 500, "retry"), (2, 503, "retry"), (3, 200, "delivered")
    ]  # fmt: skip
    with engine.connect() as conn:
        assert conn.execute(text("SELECT status, attempts FROM webhook_messages")).one() == ("delivered", 3)
        assert conn.execute(text("SELECT failing_since FROM webhook_subscriptions")).scalar_one() is None
    assert deliver_due(engine).attempted == 0


def test_exhausted_retries_mark_the_message_failed_and_visible(engine, webhook_env, receivers, monkeypatch):
    monkeypatch.setenv("OBSERVATORY_WEBHOOK_RETRY_SCHEDULE", "0")
    receiver = receivers([(500, {})] * 5)
    _subscribe(engine, receiver.url)
    _emit(engine)
    deliver_due(engine)
    assert [outcome for _, _, outcome, _ in _log(engine)] == ["retry", "failed"]
    with engine.connect() as conn:
        assert conn.execute(text("SELECT status FROM webhook_messages")).scalar_one() == "failed"


def test_410_disables_the_subscription_with_an_audit_row(engine, webhook_env, receivers):
    receiver = receivers([(410, {})])
    _subscribe(engine, receiver.url, name="gone")
    _emit(engine, 2)
    result = deliver_due(engine, batch=1)
    assert result.disabled == ["gone"] and len(receiver.received) == 1  # the second message is not sent
    with engine.connect() as conn:
        assert conn.execute(text("SELECT status FROM webhook_subscriptions")).scalar_one() == "disabled"
        audit = conn.execute(text("SELECT action, target FROM audit_log WHERE action = 'webhook.disable'")).all()
    assert [tuple(a) for a in audit] == [("webhook.disable", "gone")]


def test_429_retry_after_is_respected(engine, webhook_env, receivers):
    receiver = receivers([(429, {"Retry-After": "120"})])
    _subscribe(engine, receiver.url)
    _emit(engine)
    before = datetime.now(UTC)
    assert deliver_due(engine).retrying == 1
    (_, code, outcome, next_at), = _log(engine)  # fmt: skip
    assert code == 429 and outcome == "retry"
    assert timedelta(seconds=115) < next_at - before < timedelta(seconds=130)
    assert deliver_due(engine).attempted == 0 and len(receiver.received) == 1  # not due yet


def test_retry_schedule_jitter_and_retry_after_parsing():
    import random

    rng = random.Random(1)
    schedule = (5, 300, 1800)
    plain = Attempt(500, 1.0, None)
    delays = [next_delay(2, plain, schedule, rng) for _ in range(200)]
    assert min(delays) >= 240 and max(delays) <= 360 and max(delays) - min(delays) > 60  # ±20 %
    assert next_delay(4, plain, schedule, rng) is None
    assert next_delay(1, Attempt(429, 1.0, None, 7.0), schedule, rng) == 7.0
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert retry_after_seconds("Thu, 01 Jan 2026 00:01:00 GMT", now) == 60
    assert retry_after_seconds("soon", now) is None and retry_after_seconds("999999", now) == 24 * 3600


def test_rotation_sends_both_signatures_during_the_overlap(engine, webhook_env, receivers):
    receiver = receivers()
    _, old = _subscribe(engine, receiver.url, name="rotating")
    with engine.begin() as conn:
        _, new = rotate_secret(conn, "rotating")
    _emit(engine)
    deliver_due(engine)
    (headers, body), = receiver.received  # fmt: skip
    assert len(headers["webhook-signature"].split(" ")) == 2
    Webhook(old).verify(body, headers)
    Webhook(new).verify(body, headers)
    with engine.begin() as conn:
        conn.execute(text("UPDATE webhook_subscriptions SET previous_secret_until = now() - interval '1 second'"))
    _emit(engine)
    deliver_due(engine)
    headers, body = receiver.received[-1]
    Webhook(new).verify(body, headers)
    with pytest.raises(Exception, match="No matching signature"):
        Webhook(old).verify(body, headers)


def test_the_outbox_commits_and_rolls_back_with_the_change(engine, webhook_env, receivers):
    receiver = receivers()
    _subscribe(engine, receiver.url)
    with pytest.raises(RuntimeError), engine.begin() as conn:
        emit(conn, EXPORT_COMPLETED, {"export": 1})
        raise RuntimeError("the export failed after all")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM webhook_messages")).scalar_one() == 0
    _emit(engine)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM webhook_messages")).scalar_one() == 1
    with pytest.raises(ValueError, match="20000 bytes"), engine.begin() as conn:
        emit(conn, EXPORT_COMPLETED, {"body": "x" * 20_000})


def test_without_a_key_webhooks_refuse_and_the_log_is_pruned_after_7_days(
    engine, database_url, webhook_env, monkeypatch
):
    monkeypatch.delenv("OBSERVATORY_SECRET_KEY")
    monkeypatch.setenv("OBSERVATORY_DATABASE_URL", database_url)  # a configured database: no demo key
    with pytest.raises(WebhookConfigError, match="OBSERVATORY_SECRET_KEY"), engine.begin() as conn:
        add_subscription(conn, "http://127.0.0.1:9/", [EXPORT_COMPLETED])
    monkeypatch.setenv("OBSERVATORY_SECRET_KEY", webhook_env)
    with engine.begin() as conn:
        add_subscription(conn, "http://127.0.0.1:9/", [EXPORT_COMPLETED], name="old")
        emit(conn, EXPORT_COMPLETED, {"export": 1})
        conn.execute(
            text(
                "INSERT INTO webhook_deliveries (message_id, subscription_id, attempt, attempted_at, duration_ms, "
                "outcome) SELECT id, subscription_id, n, now() - make_interval(days => 4 + 2 * n), 1, 'retry' "
                "FROM webhook_messages, generate_series(1, 2) AS n"
            )
        )
        assert prune(conn) == {"deliveries": 1, "messages": 0}  # 8 days old goes, 6 days old stays
        assert conn.execute(text("SELECT count(*) FROM webhook_deliveries")).scalar_one() == 1


def _observatory(env: dict[str, str], *args: str) -> str:
    """What ``observatory ARGS`` printed, run in this process (no Python start-up per command); it must succeed."""
    done = invoke(*args, env=env)
    assert done.exit_code == 0, f"{args} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.mark.slow
def test_cli_end_to_end_kill_9_during_delivery_and_no_secret_anywhere(dagster_env, engine, receivers, tmp_path):
    env = {**dagster_env, "OBSERVATORY_ALLOW_PRIVATE_NETWORKS": "1", "OBSERVATORY_WEBHOOK_RETRY_SCHEDULE": "0,0"}
    without_key = invoke("webhooks", "list", env=env)
    assert without_key.exit_code != 0 and len(without_key.stderr.strip().splitlines()) == 1
    assert "OBSERVATORY_SECRET_KEY" in without_key.stderr

    env["OBSERVATORY_SECRET_KEY"] = Fernet.generate_key().decode()
    slow = receivers(delay_s=0.5)
    outputs = []
    added = json.loads(
        _observatory(env, "webhooks", "add", slow.url, "--events", "export.completed", "--name", "slow", "--json")
    )
    secret = added.pop("secret")
    assert secret.startswith("whsec_") and added["name"] == "slow"
    outputs.append(_observatory(env, "webhooks", "list"))
    outputs.append(_observatory(env, "webhooks", "list", "--json"))
    _emit(engine, 12)

    # kill -9 a delivery run (the console script, a process of its own) while the slow receiver holds its requests: its locks go with its connection
    with subprocess.Popen(
        ["observatory", "webhooks", "deliver"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as process:  # its pipes closed with it
        deadline = time.monotonic() + 120
        while not slow.received and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    assert slow.received, "the delivery run sent nothing before it was killed"
    outputs.append(_observatory(env, "webhooks", "deliver"))
    ids = [headers["webhook-id"] for headers, _ in slow.received]
    with engine.connect() as conn:
        expected = set(conn.execute(text("SELECT message_id FROM webhook_messages")).scalars())
        assert conn.execute(text("SELECT count(*) FROM webhook_messages WHERE status = 'delivered'")).scalar_one() == 12
    assert set(ids) == expected and len(ids) > len(expected)  # all arrived; some twice, with their own id
    for headers, body in slow.received:
        Webhook(secret).verify(body, headers)

    outputs.append(_observatory(env, "webhooks", "deliveries", "--json"))
    outputs.append(_observatory(env, "webhooks", "test", "slow"))
    outputs.append(_observatory(env, "webhooks", "deliver"))
    delivery_id = json.loads(_observatory(env, "webhooks", "deliveries", "slow", "--json"))[0]["id"]
    outputs.append(_observatory(env, "webhooks", "redeliver", str(delivery_id)))
    outputs.append(_observatory(env, "webhooks", "disable", "slow"))
    outputs.append(_observatory(env, "webhooks", "enable", "slow"))
    rotated = _observatory(env, "webhooks", "rotate-secret", "slow")
    new_secret = rotated.split("(shown once): ")[1].split()[0]
    outputs.append(_observatory(env, "webhooks", "deliver"))
    for text_out in outputs:
        assert secret not in text_out and new_secret not in text_out
    dagster_db = engine_for(env["OBSERVATORY_DAGSTER_DATABASE_URL"])
    with dagster_db.connect() as conn, engine.connect() as archive:
        events = " ".join(conn.execute(text("SELECT event FROM event_logs")).scalars())
        audit = " ".join(r[0] for r in archive.execute(text("SELECT row(a.*)::text FROM audit_log a")))
        stored = " ".join(r[0] for r in archive.execute(text("SELECT row(s.*)::text FROM webhook_subscriptions s")))
    assert "deliver_webhooks" in events
    for bare in (secret, new_secret, secret.removeprefix("whsec_"), new_secret.removeprefix("whsec_")):
        assert bare not in events and bare not in audit and bare not in stored
    _observatory(env, "webhooks", "remove", "slow")
    assert json.loads(_observatory(env, "webhooks", "list", "--json")) == []


def test_domains_emit_in_their_own_transactions(engine, store, tmp_path, webhook_env):
    from observatory_assets.defs.enrichment.embeddings import embed_run
    from observatory_assets.defs.enrichment.lexical import LexicalEmbedder
    from observatory_assets.defs.events.clustering import ClusteringParams, cluster_events
    from observatory_assets.defs.ingestion.collect import SourceRequest, collect
    from observatory_assets.lib.outbox import COLLECTION_FAILED, EVENT_CREATED, TREND_CROSSED
    from tests.support.helpers import labelled_space, load_rows

    with engine.begin() as conn:
        add_subscription(conn, "http://127.0.0.1:9/", [EVENT_CREATED], name="events", min_sources=2)
        add_subscription(conn, "http://127.0.0.1:9/", [TREND_CROSSED], name="trends", threshold=0.5)
        add_subscription(conn, "http://127.0.0.1:9/", [COLLECTION_FAILED], name="runs")
    rows = [
        {"key": str(n), "source": source, "published_at": "2024-05-01T08:00:00Z",
         "title": "Rail strike paralyses Copenhagen", "text": f"Commuters stranded as the rail strike spreads, {source} reports."}
        for n, source in enumerate(["a", "b", "c"])
    ]  # fmt: skip
    run_id = load_rows(engine, store, tmp_path, rows)
    embedder = LexicalEmbedder(labelled_space())
    embed_run(engine, embedder, run_id)
    params = ClusteringParams(threshold=0.0)
    cluster_events(engine, embedder.name, embedder.dimensions, params)
    cluster_events(engine, embedder.name, embedder.dimensions, params)  # nothing new: no second message

    with pytest.raises(FileNotFoundError):
        collect(engine, store, [SourceRequest("missing", "jsonl", path=str(tmp_path / "no-such-file.jsonl"))])
    with engine.begin() as conn:
        emit(conn, TREND_CROSSED, {"trend": "t", "probability": 0.6}, crossing=(0.4, 0.6))
        emit(conn, TREND_CROSSED, {"trend": "t", "probability": 0.4}, crossing=(0.6, 0.4))  # back down: crossed too
        emit(conn, TREND_CROSSED, {"trend": "t", "probability": 0.7}, crossing=(0.6, 0.7))  # not crossed
        found = conn.execute(text("SELECT event_type, payload FROM webhook_messages ORDER BY id")).all()
    kinds = [kind for kind, _ in found]
    assert kinds.count(EVENT_CREATED) == 1 and kinds.count(TREND_CROSSED) == 2 and kinds.count(COLLECTION_FAILED) == 1
    created = next(payload for kind, payload in found if kind == EVENT_CREATED)
    assert created["type"] == EVENT_CREATED and created["data"]["sources"] == 3


def test_the_embedded_demo_makes_its_own_key_and_a_configured_database_needs_one(tmp_path):
    from resources.embedded import embedded_secret_key
    from resources.settings import platform_settings

    embedded = platform_settings({"OBSERVATORY_HOME": str(tmp_path)})
    key = embedded_secret_key(embedded)
    Fernet(key)  # a valid key
    assert embedded_secret_key(embedded) == key and (tmp_path / "secret.key").stat().st_mode & 0o777 == 0o600
    configured = platform_settings({"OBSERVATORY_HOME": str(tmp_path), "OBSERVATORY_DATABASE_URL": "postgresql://x/y"})
    assert embedded_secret_key(configured) is None


def test_an_export_link_is_signed_at_sending_time(engine, store, webhook_env, receivers):
    from resources.object_store import put_bytes

    receiver = receivers([(500, {})])
    _, secret = _subscribe(engine, receiver.url)
    put_bytes(store, "exports/7.parquet", b"PAR1", "application/octet-stream")
    with engine.begin() as conn:
        emit(conn, EXPORT_COMPLETED, {"export": 7, "object_key": "exports/7.parquet"})
        stored = conn.execute(text("SELECT payload FROM webhook_messages")).scalar_one()
    assert "url" not in stored["data"]  # the outbox keeps the key; the link is made per attempt
    deliver_due(engine, store=store)
    for headers, body in receiver.received:
        data = Webhook(secret).verify(body, headers)["data"]
        assert data["url"] == store.download_url("exports/7.parquet") and data["export"] == 7
    assert len(receiver.received) == 2


def test_the_sensor_starts_delivery_when_messages_are_due(engine, database_url, webhook_env, receivers, tmp_path):
    import dagster as dg

    from observatory_assets.defs.webhooks.jobs import deliver_webhooks
    from resources import ObjectStoreResource, PostgresResource
    from sensors.webhooks import webhook_delivery_sensor

    receiver = receivers()
    _subscribe(engine, receiver.url)
    resources = {"postgres": PostgresResource(url=database_url)}
    with dg.DagsterInstance.ephemeral() as instance:

        def tick():
            with dg.build_sensor_context(instance=instance, resources=resources) as context:
                return webhook_delivery_sensor(context)

        assert isinstance(tick(), dg.SkipReason)  # nothing due
        _emit(engine)
        request = tick()
        assert isinstance(request, dg.RunRequest)
        running = instance.create_run_for_job(deliver_webhooks, status=dg.DagsterRunStatus.STARTED)
        assert "still in progress" in tick().skip_message
        instance.report_run_failed(running)
        run_resources = {**resources, "object_store": ObjectStoreResource(local_root=str(tmp_path / "objects"))}
        assert deliver_webhooks.execute_in_process(resources=run_resources, instance=instance).success
        assert len(receiver.received) == 1 and isinstance(tick(), dg.SkipReason)
        _emit(engine)
        assert tick().run_key != request.run_key  # a new due state, a new run


class Answering:
    """A receiver on 127.0.0.1 whose answer to each POST is written by ``answer(handler)``."""

    def __init__(self, answer):
        self.headers: list[dict] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802 (http.server's name)
                self.rfile.read(int(self.headers.get("content-length", 0)))
                receiver.headers.append({k.lower(): v for k, v in self.headers.items()})
                try:
                    answer(self)
                except (BrokenPipeError, ConnectionResetError):  # the sender read what it wanted
                    self.close_connection = True

            def log_message(self, format, *args):  # noqa: A002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def answering():
    started: list[Answering] = []

    def start(answer) -> Answering:
        started.append(Answering(answer))
        return started[-1]

    yield start
    for receiver in started:
        receiver.close()


def test_a_503_with_a_minus_0000_date_is_a_retry_not_a_crashed_cycle(engine, webhook_env, receivers):
    receiver = receivers([(503, {"Retry-After": "Wed, 21 Oct 2015 07:28:00 -0000"})])
    _subscribe(engine, receiver.url)
    _emit(engine)
    result = deliver_due(engine)  # the date is past: retried at once (schedule 0 s), then delivered
    assert (result.attempted, result.retrying, result.delivered) == (2, 1, 1)
    assert [(code, outcome) for _, code, outcome, _ in _log(engine)] == [(503, "retry"), (200, "delivered")]


def test_a_receiver_answer_is_read_a_few_kib_at_most_and_never_decoded(engine, webhook_env, answering):
    def huge(handler):
        handler.send_response(200)
        handler.send_header("content-length", str(64 * 1024**2))
        handler.send_header("content-encoding", "gzip")
        handler.end_headers()
        for _ in range(1024):
            handler.wfile.write(bytes(64 * 1024))

    receiver = answering(huge)
    _subscribe(engine, receiver.url)
    _emit(engine)
    result = deliver_due(engine)  # a 64 MiB answer (over the 15 MiB body cap) is no failed delivery
    assert (result.attempted, result.delivered) == (1, 1)
    assert receiver.headers[0]["accept-encoding"] == "identity"


def test_webhooks_remove_never_waits_behind_a_delivery_on_the_wire(engine, webhook_env, answering):
    on_the_wire, release = threading.Event(), threading.Event()

    def held(handler):
        on_the_wire.set()
        release.wait(60)
        handler.send_response(200)
        handler.send_header("content-length", "0")
        handler.end_headers()

    receiver = answering(held)
    _subscribe(engine, receiver.url, name="slow")
    _emit(engine)
    outcome: dict = {}
    delivering = threading.Thread(target=lambda: outcome.update(result=deliver_due(engine)))
    delivering.start()
    try:
        assert on_the_wire.wait(60)
        with engine.begin() as conn:
            conn.execute(text("SET LOCAL lock_timeout = '5s'"))  # held behind the claim's locks before
            remove_subscription(conn, "slow")
    finally:
        release.set()
        delivering.join(60)
    assert outcome["result"].attempted == 0  # the message went with its subscription: nothing to record
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM webhook_messages")).scalar_one() == 0


def test_an_undecryptable_secret_or_a_bad_export_key_fails_its_own_message_only(engine, store, webhook_env, receivers):
    good, lost = receivers(), receivers()
    _subscribe(engine, good.url, name="good")
    _subscribe(engine, lost.url, name="lost")
    with engine.begin() as conn:  # a secret encrypted under a key that is no longer the platform's
        conn.execute(
            text("UPDATE webhook_subscriptions SET secret = :token WHERE name = 'lost'"),
            {"token": Fernet(Fernet.generate_key()).encrypt(b"whsec_old")},
        )
        emit(conn, EXPORT_COMPLETED, {"export": 1})
        emit(conn, EXPORT_COMPLETED, {"export": 2, "object_key": "../outside"})  # no valid object key
    result = deliver_due(engine, store=store)
    assert (result.delivered, result.failed) == (1, 3) and lost.received == []
    assert [json.loads(body)["data"]["export"] for _, body in good.received] == [1]
    with engine.connect() as conn:
        errors = conn.execute(
            text("SELECT s.name, d.error FROM webhook_deliveries d JOIN webhook_subscriptions s "
                 "ON s.id = d.subscription_id WHERE d.outcome = 'failed' ORDER BY s.name, d.id")
        ).all()  # fmt: skip
        streaks = conn.execute(text("SELECT count(failing_since) FROM webhook_subscriptions")).scalar_one()
    assert [name for name, _ in errors] == ["good", "lost", "lost"]
    assert "cannot be built" in errors[0][1] and all("cannot be decrypted" in e for _, e in errors[1:])
    assert streaks == 0  # our trouble, not the receivers': no failure streak toward disabling them


def test_the_sensor_stops_waiting_for_a_delivery_run_that_stopped_answering(
    engine, database_url, webhook_env, receivers
):
    import dagster as dg
    from dagster._core.events import DagsterEvent, DagsterEventType
    from dagster._core.events.log import EventLogEntry

    from observatory_assets.defs.webhooks.jobs import deliver_webhooks
    from resources import PostgresResource
    from sensors.webhooks import webhook_delivery_sensor

    receiver = receivers()
    _subscribe(engine, receiver.url)
    _emit(engine)
    resources = {"postgres": PostgresResource(url=database_url)}
    with dg.DagsterInstance.ephemeral() as instance:
        run = instance.create_run_for_job(deliver_webhooks, status=dg.DagsterRunStatus.STARTING)

        def started_ago(seconds: float) -> None:  # the run worker reports its start, then is killed (-9)
            event = DagsterEvent(DagsterEventType.RUN_START.value, job_name=deliver_webhooks.name)
            instance.handle_new_event(
                EventLogEntry(error_info=None, level=20, user_message="", run_id=run.run_id,
                              timestamp=time.time() - seconds, dagster_event=event)
            )  # fmt: skip

        def tick():
            with dg.build_sensor_context(instance=instance, resources=resources) as context:
                return webhook_delivery_sensor(context)

        started_ago(60)
        assert "still in progress" in tick().skip_message  # a live run is waited for
        started_ago(16 * 60)  # past the 15 min a delivery run is waited for
        assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.STARTED
        assert isinstance(tick(), dg.RunRequest)  # a run STARTED for ever no longer stalls delivery
