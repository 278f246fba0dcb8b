"""The webhook outbox: what happened, written in the same transaction as the change that made it happen.

A domain that changes something subscribers care about calls :func:`emit` with the connection of its
own transaction: the message rows commit (or roll back) with the change, so no message is lost and none
reports a change that did not happen. Delivery (``defs/webhooks/delivery.py``) reads the rows later.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, text

from observatory_assets.lib.statuses import WebhookSubscriptionStatus

EVENT_CREATED = "event.created"
TREND_CROSSED = "trend.crossed"
COLLECTION_FAILED = "collection.failed"
BUDGET_EXHAUSTED = "budget.exhausted"
EXPORT_COMPLETED = "export.completed"
TAKEDOWN_COMPLETED = "takedown.completed"
BACKUP_FAILED = "backup.failed"
TEST = "webhook.test"
EVENT_TYPES = (
    EVENT_CREATED,
    TREND_CROSSED,
    COLLECTION_FAILED,
    BUDGET_EXHAUSTED,
    EXPORT_COMPLETED,
    TAKEDOWN_COMPLETED,
    BACKUP_FAILED,
)
#: Payloads carry links and ids, not bodies.
MAX_PAYLOAD_BYTES = 20_000

_FAN_OUT = text(
    """
    INSERT INTO webhook_messages (message_id, subscription_id, event_type, payload)
    SELECT 'msg_' || replace(gen_random_uuid()::text, '-', ''), s.id, :event_type,
           CAST(:payload AS jsonb)
      FROM webhook_subscriptions s
     WHERE s.status = :enabled AND :event_type = ANY(s.event_types)
       AND (:event_type <> 'event.created' OR (s.min_sources > :low AND s.min_sources <= :high))
       AND (:event_type <> 'trend.crossed'
            OR (s.threshold IS NOT NULL AND s.threshold > :low AND s.threshold <= :high))
    """
)


#: ``event.created`` for every staged event (``events_stage`` of the clustering run, before it is written
#: back) whose distinct sources pass a subscription's ``min_sources``: run in the clustering transaction.
EVENT_CREATED_FROM_STAGE = """
INSERT INTO webhook_messages (message_id, subscription_id, event_type, payload)
SELECT 'msg_' || replace(gen_random_uuid()::text, '-', ''), w.id, 'event.created',
       jsonb_build_object('type', 'event.created', 'timestamp', clock_timestamp(),
                          'data', jsonb_build_object('event', s.id, 'sources', s.source_count,
                                                     'items', s.item_count, 'first_seen_at', s.first_seen_at))
  FROM events_stage s
  LEFT JOIN events e ON e.id = s.id
  JOIN webhook_subscriptions w
    ON w.status = %(enabled)s AND 'event.created' = ANY(w.event_types)
   AND w.min_sources > coalesce(e.source_count, 0) AND w.min_sources <= s.source_count
 WHERE s.item_count > 0
"""


class PayloadTooLarge(ValueError):
    """A webhook payload over :data:`MAX_PAYLOAD_BYTES`: send links and ids, not bodies."""


def envelope(event_type: str, data: dict[str, Any], at: datetime | None = None) -> str:
    """The Standard Webhooks body: ``{"type", "timestamp", "data"}`` as compact JSON."""
    body = json.dumps(
        {"type": event_type, "timestamp": (at or datetime.now(UTC)).isoformat(), "data": data},
        separators=(",", ":"),
        default=str,
        ensure_ascii=False,
    )
    if len(body.encode()) > MAX_PAYLOAD_BYTES:
        raise PayloadTooLarge(f"{event_type} payload is over {MAX_PAYLOAD_BYTES} bytes")
    return body


def emit(
    conn: Connection,
    event_type: str,
    payload: dict[str, Any],
    crossing: tuple[float, float] | None = None,
) -> int:
    """Queue ``event_type`` for every enabled subscription to it, in the caller's transaction; returns how many.

    ``crossing`` is what moved, before and after: for ``event.created`` the event's distinct sources
    (a subscription with ``--min-sources N`` hears of it when N is passed), for ``trend.crossed`` the
    probability (a subscription with ``--threshold P`` hears of it when P lies between, either way).
    """
    if event_type not in EVENT_TYPES and event_type != TEST:
        raise ValueError(f"unknown webhook event type {event_type!r}")
    low, high = sorted(crossing) if crossing is not None else (0.0, 0.0)
    return conn.execute(
        _FAN_OUT,
        {
            "event_type": event_type,
            "payload": envelope(event_type, payload),
            "low": low,
            "high": high,
            "enabled": WebhookSubscriptionStatus.ENABLED,
        },
    ).rowcount


def new_message_id() -> str:
    """A fresh ``webhook-id``."""
    return f"msg_{uuid.uuid4().hex}"


def emit_budget_exhausted(conn: Connection, budget: str, details: dict[str, Any]) -> int:
    """``budget.exhausted``: a budget's hard stop refused a poll (the polling domain calls this)."""
    return emit(conn, BUDGET_EXHAUSTED, {"budget": budget, **details})


def queue_test_message(conn: Connection, subscription_id: int, subscription_name: str) -> str:
    """Queue a ``webhook.test`` message to one subscription (enabled or not), in the caller's transaction;
    returns its ``webhook-id``. The next delivery cycle sends it like any other message."""
    message_id = new_message_id()
    conn.execute(
        text("INSERT INTO webhook_messages (message_id, subscription_id, event_type, payload) "
             "VALUES (:id, :subscription, :type, CAST(:payload AS jsonb))"),
        {"id": message_id, "subscription": subscription_id, "type": TEST,
         "payload": envelope(TEST, {"subscription": subscription_name})},
    )  # fmt: skip
    return message_id
