"""Webhook subscriptions: who is told what, and the signing secrets, encrypted at rest.

A subscription's secret (``whsec_`` + base64 of 24 random bytes, the Standard Webhooks form) is shown
once, when the subscription is added or its secret rotated, and otherwise only ever stored as a Fernet
token under ``OBSERVATORY_SECRET_KEY``. After a rotation the previous secret keeps signing for 24 hours,
so a receiver can switch over without missing a message: both signatures are sent.
"""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import Connection, text

from observatory_assets.lib.audit import record_audit
from observatory_assets.lib.outbox import EVENT_CREATED, EVENT_TYPES, TREND_CROSSED
from observatory_assets.lib.statuses import WebhookSubscriptionStatus
from resources.embedded import embedded_secret_key
from resources.outbound import OutboundRefused, checked_url

ROTATION_OVERLAP = timedelta(hours=24)
ENABLED, DISABLED = WebhookSubscriptionStatus.ENABLED, WebhookSubscriptionStatus.DISABLED


class WebhookConfigError(ValueError):
    """A webhook command that cannot run as asked (a one-line message for the CLI)."""


def cipher() -> Fernet:
    """The Fernet cipher of ``OBSERVATORY_SECRET_KEY`` (the embedded demo's own key under its home);
    without a valid key webhook commands refuse."""
    key = embedded_secret_key()
    if not key:
        raise WebhookConfigError("OBSERVATORY_SECRET_KEY is not set: webhook secrets cannot be encrypted")
    try:
        return Fernet(key)
    except (ValueError, TypeError):
        raise WebhookConfigError("OBSERVATORY_SECRET_KEY is not a Fernet key (32 url-safe base64 bytes)") from None


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode("ascii")


def decrypt(fernet: Fernet, token: bytes) -> str:
    try:
        return fernet.decrypt(bytes(token)).decode("ascii")
    except InvalidToken:
        raise WebhookConfigError("a webhook secret cannot be decrypted with OBSERVATORY_SECRET_KEY") from None


@dataclass(frozen=True)
class Subscription:
    id: int
    name: str
    url: str
    event_types: list[str]
    min_sources: int
    threshold: float | None
    status: str
    disabled_reason: str | None
    rotating_until: datetime | None

    def as_json(self) -> dict:
        return {
            "id": self.id,
            "name": self.name,
            "url": self.url,
            "events": self.event_types,
            "min_sources": self.min_sources,
            "threshold": self.threshold,
            "status": self.status,
            "disabled_reason": self.disabled_reason,
            "rotating_until": self.rotating_until.isoformat() if self.rotating_until else None,
        }


def add_subscription(
    conn: Connection,
    url: str,
    event_types: list[str],
    name: str | None = None,
    min_sources: int = 3,
    threshold: float | None = None,
    actor: str = "cli",
) -> tuple[Subscription, str]:
    """Store a new subscription; returns it and its secret in clear (to be shown once)."""
    unknown = sorted(set(event_types) - set(EVENT_TYPES))
    if unknown or not event_types:
        raise WebhookConfigError(
            f"unknown event type(s) {', '.join(unknown) or '(none)'}; known: {', '.join(EVENT_TYPES)}"
        )
    try:
        checked_url(url)
    except OutboundRefused as error:
        raise WebhookConfigError(f"webhook URL refused: {error}") from None
    if min_sources < 1:
        raise WebhookConfigError("--min-sources must be at least 1")
    if threshold is not None and not 0 < threshold < 1:
        raise WebhookConfigError("--threshold must be a probability between 0 and 1")
    if TREND_CROSSED in event_types and threshold is None:
        raise WebhookConfigError("trend.crossed needs --threshold P")
    secret = new_secret()
    token = cipher().encrypt(secret.encode("ascii"))
    name = name or f"hook-{secrets.token_hex(3)}"
    if conn.execute(text("SELECT 1 FROM webhook_subscriptions WHERE name = :name"), {"name": name}).first():
        raise WebhookConfigError(f"a webhook named {name!r} exists already")
    subscription_id = conn.execute(
        text(
            "INSERT INTO webhook_subscriptions (name, url, event_types, min_sources, threshold, secret) "
            "VALUES (:name, :url, :types, :min_sources, :threshold, :secret) RETURNING id"
        ),
        {
            "name": name,
            "url": url,
            "types": sorted(set(event_types)),
            "min_sources": min_sources if EVENT_CREATED in event_types else 3,
            "threshold": threshold,
            "secret": token,
        },
    ).scalar_one()
    record_audit(conn, actor, "webhook.add", "webhook_subscription", subscription_id, target=name)
    return subscription(conn, name), secret


_SELECT = """
SELECT id, name, url, event_types, min_sources, threshold, status, disabled_reason,
       CASE WHEN previous_secret_until > now() THEN previous_secret_until END AS rotating_until
  FROM webhook_subscriptions
"""


def subscriptions(conn: Connection) -> list[Subscription]:
    return [Subscription(**row) for row in conn.execute(text(f"{_SELECT} ORDER BY name")).mappings()]


def subscription(conn: Connection, name: str) -> Subscription:
    row = conn.execute(text(f"{_SELECT} WHERE name = :name"), {"name": name}).mappings().first()
    if row is None:
        raise WebhookConfigError(f"no webhook named {name!r} (see `observatory webhooks list`)")
    return Subscription(**row)


def set_status(conn: Connection, name: str, status: str, reason: str | None, actor: str = "cli") -> Subscription:
    """Enable or disable a subscription (audited); enabling clears its failure streak."""
    current = subscription(conn, name)
    conn.execute(
        text(
            "UPDATE webhook_subscriptions SET status = :status, disabled_reason = :reason, "
            "failing_since = CASE WHEN :status = :enabled THEN NULL ELSE failing_since END WHERE id = :id"
        ),
        {"status": status, "reason": reason, "id": current.id, "enabled": ENABLED},
    )
    action = "webhook.enable" if status == ENABLED else "webhook.disable"
    record_audit(conn, actor, action, "webhook_subscription", current.id, target=name, details={"reason": reason})
    return subscription(conn, name)


def rotate_secret(conn: Connection, name: str, actor: str = "cli") -> tuple[Subscription, str]:
    """A new secret; the current one keeps signing (beside it) for :data:`ROTATION_OVERLAP`."""
    current = subscription(conn, name)
    secret = new_secret()
    conn.execute(
        text(
            "UPDATE webhook_subscriptions SET previous_secret = secret, previous_secret_until = now() + :overlap, "
            "secret = :secret WHERE id = :id"
        ),
        {"secret": cipher().encrypt(secret.encode("ascii")), "overlap": ROTATION_OVERLAP, "id": current.id},
    )
    record_audit(conn, actor, "webhook.rotate_secret", "webhook_subscription", current.id, target=name)
    return subscription(conn, name), secret


def remove_subscription(conn: Connection, name: str, actor: str = "cli") -> None:
    current = subscription(conn, name)
    conn.execute(text("DELETE FROM webhook_subscriptions WHERE id = :id"), {"id": current.id})
    record_audit(conn, actor, "webhook.remove", "webhook_subscription", current.id, target=name)
