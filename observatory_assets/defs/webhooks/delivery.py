"""Delivering the outbox: signed POSTs, retries on the Svix schedule, and a log of every attempt.

One cycle claims a batch of due messages of enabled subscriptions in a short transaction
(``FOR UPDATE SKIP LOCKED``) and holds each claimed message by a session advisory lock on its own
connection, so no other cycle sends it meanwhile, yet no database transaction is open while the POSTs
are on the wire: ``webhooks remove`` never waits behind a receiver. It sends them concurrently through
the one guarded :class:`~resources.outbound.OutboundClient` (15 s for the whole exchange, no redirects
followed, at most 4 KiB of the answer read), records each attempt and its consequence in a second short
transaction, for the messages that still exist (one whose subscription was removed meanwhile went with
it), and only then lets go of them. A cycle killed midway records nothing, and its locks go with its
connection: its messages are due at once and sent again with the same ``webhook-id`` (at least once).

A message that cannot be sent for a reason of ours (its subscription's secret no longer decrypts after
a key change, its export link cannot be signed) fails alone, with the reason in its log: nothing is
sent for it, the other messages of the batch go on, and ``webhooks redeliver`` sends it once fixed.

* 2xx: delivered.
* 410 Gone: the subscription is disabled (audited); the message fails.
* anything else (a 3xx, another 4xx, 429, 5xx, a timeout or a refused connection): retried after the
  next delay of the schedule (Svix's 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h; ``OBSERVATORY_WEBHOOK_RETRY_
  SCHEDULE`` overrides it) with ±20 % jitter, or after ``Retry-After`` when a 429 or 5xx gives one;
  past the last delay the message is marked failed. An endpoint failing for 5 days is disabled (audited).
"""

from __future__ import annotations

import json
import random
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, Engine, text
from standardwebhooks.webhooks import Webhook

from observatory_assets.defs.webhooks.subscriptions import DISABLED, WebhookConfigError, cipher, decrypt
from observatory_assets.lib.audit import record_audit
from observatory_assets.lib.errors import failure_message
from observatory_assets.lib.outbox import EXPORT_COMPLETED
from observatory_assets.lib.statuses import WebhookDeliveryOutcome, WebhookMessageStatus, WebhookSubscriptionStatus
from resources.http_headers import retry_after_seconds
from resources.object_store import ObjectStore
from resources.outbound import OutboundClient, OutboundError
from resources.settings import platform_settings

TIMEOUT_S = 15.0
DISABLE_AFTER = timedelta(days=5)
RETENTION = timedelta(days=7)
JITTER = 0.2
DEFAULT_BATCH = 500
DEFAULT_WORKERS = 32
EXPORT_LINK_VALIDITY = timedelta(hours=24)

#: The bound statuses of a due message: pending, of an enabled subscription.
_PENDING = {"pending": WebhookMessageStatus.PENDING}
_DUE = {**_PENDING, "enabled": WebhookSubscriptionStatus.ENABLED}

#: The advisory lock space of a message being sent (``pg_try_advisory_lock(space, id)``).
_SENDING = "hashtext('observatory.webhook_message')"

_CLAIM = """
SELECT m.id, m.message_id, m.subscription_id, m.event_type, m.payload::text AS body, m.attempts,
       s.name, s.url, s.secret, CASE WHEN s.previous_secret_until > now() THEN s.previous_secret END AS previous,
       s.failing_since
  FROM webhook_messages m JOIN webhook_subscriptions s ON s.id = m.subscription_id
 WHERE m.status = %(pending)s AND m.next_attempt_at <= now() AND s.status = %(enabled)s
 ORDER BY m.next_attempt_at, m.id
 LIMIT %(limit)s
 FOR UPDATE OF m SKIP LOCKED
"""
#: Of the candidates, those this session now holds (another cycle may be sending the rest).
_HOLD = (
    f"SELECT id FROM unnest(%(ids)s::bigint[]) AS id WHERE pg_try_advisory_lock({_SENDING}, mod(id, 2147483647)::int)"
)
_RELEASE = f"SELECT pg_advisory_unlock({_SENDING}, mod(id, 2147483647)::int) FROM unnest(%(ids)s::bigint[]) AS id"
#: The held messages that still exist, locked while their attempts are recorded.
_EXISTING = "SELECT id FROM webhook_messages WHERE id = ANY(%(ids)s) AND status = %(pending)s FOR UPDATE"


@dataclass
class Attempt:
    """What one POST of a message got; ``sent=False``: the message could not be sent (``error`` says why)."""

    status_code: int | None
    duration_ms: float
    error: str | None
    retry_after_s: float | None = None
    sent: bool = True


@dataclass
class DeliveryResult:
    """What a delivery cycle did."""

    attempted: int = 0
    delivered: int = 0
    retrying: int = 0
    failed: int = 0
    disabled: list[str] = field(default_factory=list)
    attempt_ms: list[float] = field(default_factory=list)
    seconds: float = 0.0


def signature_header(message_id: str, at: datetime, body: str, secrets: list[str]) -> str:
    """``webhook-signature``: one ``v1,…`` per secret (two during a rotation's overlap), space-separated."""
    return " ".join(Webhook(secret).sign(message_id, at, body) for secret in secrets)


def post(client: OutboundClient, url: str, message_id: str, body: str, secrets: list[str]) -> Attempt:
    """One signed POST of a message, never raising: network failures come back as an error text. Only
    the status and ``Retry-After`` of the answer matter: at most 4 KiB of its body is read, undecoded."""
    now = datetime.now(UTC)
    headers = {
        "content-type": "application/json",
        "accept-encoding": "identity",
        "webhook-id": message_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signature_header(message_id, now, body, secrets),
    }
    started = time.perf_counter()
    try:
        with client.stream("POST", url, headers=headers, content=body.encode(), timeout_s=TIMEOUT_S) as response:
            response.read_head()
    except OutboundError as error:
        return Attempt(None, (time.perf_counter() - started) * 1000, str(error))
    retry_after = None
    if response.status_code == 429 or response.status_code >= 500:
        retry_after = retry_after_seconds(response.headers.get("retry-after"), now)
    return Attempt(response.status_code, (time.perf_counter() - started) * 1000, None, retry_after)


def next_delay(attempts: int, attempt: Attempt, schedule: tuple[float, ...], rng: random.Random) -> float | None:
    """Seconds until the next try after ``attempts`` tries, or None when the schedule is spent."""
    if attempts > len(schedule):
        return None
    if attempt.retry_after_s is not None:
        return attempt.retry_after_s
    return schedule[attempts - 1] * rng.uniform(1 - JITTER, 1 + JITTER)


def deliver_due(
    engine: Engine,
    client: OutboundClient | None = None,
    batch: int = DEFAULT_BATCH,
    workers: int = DEFAULT_WORKERS,
    store: ObjectStore | None = None,
) -> DeliveryResult:
    """Deliver every due message, batch after batch, until none is due.
    With ``store``, an ``export.completed`` message links to its file by a URL signed at sending time."""
    schedule = platform_settings().webhook_retry_schedule
    fernet = cipher()
    rng = random.Random()
    result = DeliveryResult()
    started = time.perf_counter()
    own_client = client is None
    client = client or OutboundClient(max_connections=workers)
    try:
        with ThreadPoolExecutor(max_workers=workers) as pool, engine.connect() as holder:
            while claimed := _claim(holder, batch):
                try:
                    attempts = _send_batch(pool, client, claimed, fernet, store)
                    with holder.begin():
                        params = {"ids": [m["id"] for m in claimed], **_PENDING}
                        existing = {row[0] for row in holder.exec_driver_sql(_EXISTING, params)}
                        kept = [(m, a) for m, a in zip(claimed, attempts) if m["id"] in existing]
                        if kept:
                            _record(holder, *map(list, zip(*kept)), schedule, rng, result)
                finally:
                    _release(holder, claimed)
    finally:
        if own_client:
            client.close()
    result.seconds = time.perf_counter() - started
    return result


def _claim(holder: Connection, batch: int) -> list:
    """Up to ``batch`` due messages, each now held by ``holder``'s session until :func:`_release`."""
    with holder.begin():
        candidates = holder.exec_driver_sql(_CLAIM, {"limit": batch, **_DUE}).mappings().all()
        if not candidates:
            return []
        held = {row[0] for row in holder.exec_driver_sql(_HOLD, {"ids": [m["id"] for m in candidates]})}
    return [message for message in candidates if message["id"] in held]


def _release(holder: Connection, claimed) -> None:
    with holder.begin():
        holder.exec_driver_sql(_RELEASE, {"ids": [m["id"] for m in claimed]}).all()


def _send_batch(pool: ThreadPoolExecutor, client: OutboundClient, claimed, fernet, store) -> list[Attempt]:
    """POST every claimed message that can be signed and built; one that cannot gets an unsent attempt."""
    secrets = _secrets(fernet, claimed)
    prepared: list[tuple[str, str, str, list[str]] | Attempt] = []
    for message in claimed:
        keys = secrets[message["subscription_id"]]
        if isinstance(keys, Attempt):
            prepared.append(keys)
            continue
        try:
            body = fresh_body(message["event_type"], message["body"], store)
        except Exception as error:  # the export's link cannot be signed (a missing or bad object key)
            prepared.append(Attempt(None, 0.0, f"the message cannot be built: {failure_message(error)}", sent=False))
            continue
        prepared.append((message["url"], message["message_id"], body, keys))
    sending = [item for item in prepared if not isinstance(item, Attempt)]
    answers = iter(pool.map(lambda item: post(client, *item), sending))
    return [item if isinstance(item, Attempt) else next(answers) for item in prepared]


def fresh_body(event_type: str, body: str, store: ObjectStore | None) -> str:
    """The body to send now: an export's download URL is signed afresh for each attempt (valid 24 h)."""
    if store is None or event_type != EXPORT_COMPLETED:
        return body
    message = json.loads(body)
    key = message["data"].get("object_key")
    if key:
        message["data"]["url"] = store.download_url(key, expires=EXPORT_LINK_VALIDITY)
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False)


def _secrets(fernet, claimed) -> dict[int, list[str] | Attempt]:
    """The signing secrets of each claimed message's subscription, or the unsent attempt of a
    subscription whose secret does not decrypt (the key changed): its messages fail, not the batch."""
    keys: dict[int, list[str] | Attempt] = {}
    for message in claimed:
        if message["subscription_id"] not in keys:
            tokens = [message["secret"], *([message["previous"]] if message["previous"] is not None else [])]
            try:
                keys[message["subscription_id"]] = [decrypt(fernet, token) for token in tokens]
            except WebhookConfigError as error:
                keys[message["subscription_id"]] = Attempt(None, 0.0, str(error), sent=False)
    return keys


def _record(conn: Connection, claimed, attempts: list[Attempt], schedule, rng, result: DeliveryResult) -> None:
    """Log every attempt and apply its consequence to the message and its subscription."""
    now = datetime.now(UTC)
    deliveries, updates = [], []
    succeeded, failing, gone = set(), {}, {}
    for message, attempt in zip(claimed, attempts):
        tries = message["attempts"] + 1
        next_at = None
        if not attempt.sent:  # our side's trouble: the receiver is not to blame, nor retried for nothing
            outcome, status = WebhookDeliveryOutcome.FAILED, WebhookMessageStatus.FAILED
            result.failed += 1
        elif attempt.status_code is not None and 200 <= attempt.status_code < 300:
            outcome, status = WebhookDeliveryOutcome.DELIVERED, WebhookMessageStatus.DELIVERED
            succeeded.add(message["subscription_id"])
            result.delivered += 1
        elif attempt.status_code == 410:
            outcome, status = WebhookDeliveryOutcome.DISABLED, WebhookMessageStatus.FAILED
            gone[message["subscription_id"]] = message["name"]
            result.failed += 1
        else:
            delay = next_delay(tries, attempt, schedule, rng)
            failing[message["subscription_id"]] = (message["name"], message["failing_since"])
            if delay is None:
                outcome, status = WebhookDeliveryOutcome.FAILED, WebhookMessageStatus.FAILED
                result.failed += 1
            else:
                outcome, status, next_at = (
                    WebhookDeliveryOutcome.RETRY,
                    WebhookMessageStatus.PENDING,
                    now + timedelta(seconds=delay),
                )
                result.retrying += 1
        result.attempted += 1
        result.attempt_ms.append(attempt.duration_ms)
        deliveries.append(
            {
                "message": message["id"],
                "subscription": message["subscription_id"],
                "attempt": tries,
                "code": attempt.status_code,
                "ms": attempt.duration_ms,
                "error": attempt.error
                or (None if outcome == WebhookDeliveryOutcome.DELIVERED else f"HTTP {attempt.status_code}"),
                "outcome": outcome,
                "next_at": next_at,
            }
        )
        updates.append({"id": message["id"], "status": status, "tries": tries, "next_at": next_at or now, **_PENDING})
    conn.execute(
        text(
            "INSERT INTO webhook_deliveries (message_id, subscription_id, attempt, status_code, duration_ms, error, "
            "outcome, next_attempt_at) VALUES (:message, :subscription, :attempt, :code, :ms, :error, :outcome, :next_at)"
        ),
        deliveries,
    )
    conn.execute(
        text(
            "UPDATE webhook_messages SET status = :status, attempts = :tries, next_attempt_at = :next_at, "
            "finished_at = CASE WHEN :status = :pending THEN NULL ELSE now() END WHERE id = :id"
        ),
        updates,
    )
    if succeeded:
        conn.execute(
            text("UPDATE webhook_subscriptions SET failing_since = NULL WHERE id = ANY(:ids)"), {"ids": list(succeeded)}
        )
    for subscription_id, name in gone.items():
        _disable(conn, subscription_id, name, "the endpoint answered 410 Gone", result)
    for subscription_id, (name, since) in failing.items():
        if subscription_id in succeeded or subscription_id in gone:
            continue
        if since is not None and now - since >= DISABLE_AFTER:
            _disable(conn, subscription_id, name, f"failing since {since:%Y-%m-%d %H:%M} UTC (5 days)", result)
        elif since is None:
            conn.execute(
                text("UPDATE webhook_subscriptions SET failing_since = now() WHERE id = :id"), {"id": subscription_id}
            )


def _disable(conn: Connection, subscription_id: int, name: str, reason: str, result: DeliveryResult) -> None:
    conn.execute(
        text("UPDATE webhook_subscriptions SET status = :status, disabled_reason = :reason WHERE id = :id"),
        {"status": DISABLED, "reason": reason, "id": subscription_id},
    )
    record_audit(
        conn, "webhooks", "webhook.disable", "webhook_subscription", subscription_id, target=name,
        details={"reason": reason},
    )  # fmt: skip
    result.disabled.append(name)


def due_messages(conn: Connection) -> tuple[int, str]:
    """How many messages of enabled subscriptions are due, and a fingerprint of that due state (what the
    sensor keys its runs on: a retry or a new message changes it)."""
    count, last_id, last_due = conn.execute(
        text(
            "SELECT count(*), coalesce(max(m.id), 0), max(m.next_attempt_at) "
            "FROM webhook_messages m JOIN webhook_subscriptions s ON s.id = m.subscription_id "
            "WHERE m.status = :pending AND m.next_attempt_at <= now() AND s.status = :enabled"
        ),
        _DUE,
    ).one()
    return count, f"{count}-{last_id}-{last_due.timestamp() if last_due else 0:.6f}"


def redeliver(conn: Connection, delivery_or_message: str, actor: str = "cli") -> str:
    """Queue a message again, now, with its ``webhook-id``: by delivery id (a number) or ``msg_…`` id."""
    if delivery_or_message.isdigit():
        row = conn.execute(
            text(
                "UPDATE webhook_messages m SET status = :pending, next_attempt_at = now(), finished_at = NULL "
                "FROM webhook_deliveries d WHERE d.id = :id AND m.id = d.message_id RETURNING m.id, m.message_id"
            ),
            {"id": int(delivery_or_message), **_PENDING},
        ).first()
    else:
        row = conn.execute(
            text(
                "UPDATE webhook_messages SET status = :pending, next_attempt_at = now(), finished_at = NULL "
                "WHERE message_id = :id RETURNING id, message_id"
            ),
            {"id": delivery_or_message, **_PENDING},
        ).first()
    if row is None:
        raise ValueError(f"no webhook delivery or message {delivery_or_message!r}")
    record_audit(conn, actor, "webhook.redeliver", "webhook_message", row[0], target=row[1])
    return row[1]


def deliveries(conn: Connection, name: str | None = None, failed_only: bool = False, limit: int = 50) -> list[dict]:
    """The latest attempts, newest first: of one subscription, or only those that did not deliver."""
    rows = conn.execute(
        text(
            """
            SELECT d.id, s.name, m.message_id, m.event_type, d.attempt, d.attempted_at, d.status_code,
                   round(d.duration_ms::numeric, 1)::float AS duration_ms, d.error, d.outcome, d.next_attempt_at
              FROM webhook_deliveries d
              JOIN webhook_messages m ON m.id = d.message_id
              JOIN webhook_subscriptions s ON s.id = d.subscription_id
             WHERE (CAST(:name AS text) IS NULL OR s.name = :name)
               AND (NOT :failed OR d.outcome <> :delivered)
             ORDER BY d.id DESC
             LIMIT :limit
            """
        ),
        {"name": name, "failed": failed_only, "limit": limit, "delivered": WebhookDeliveryOutcome.DELIVERED},
    ).mappings()
    return [dict(r) for r in rows]


def prune(conn: Connection, now: datetime | None = None) -> dict[str, int]:
    """Delete attempts older than 7 days, and finished messages older than that."""
    cutoff = (now or datetime.now(UTC)) - RETENTION
    removed = conn.execute(text("DELETE FROM webhook_deliveries WHERE attempted_at < :cutoff"), {"cutoff": cutoff})
    finished = conn.execute(
        text("DELETE FROM webhook_messages WHERE status <> :pending AND finished_at < :cutoff"),
        {"cutoff": cutoff, **_PENDING},
    )
    return {"deliveries": removed.rowcount, "messages": finished.rowcount}
