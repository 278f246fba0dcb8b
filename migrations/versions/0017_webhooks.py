"""Webhooks: subscriptions, the outbox of messages and the log of every delivery attempt.

* ``webhook_subscriptions`` — who is told what: a URL, the event types, the filters of
  ``event.created`` (``min_sources``) and ``trend.crossed`` (``threshold``), the signing secret
  encrypted with Fernet (and the previous one during a rotation's 24-hour overlap), and whether the
  endpoint is enabled (410 Gone or 5 days of failures disable it).
* ``webhook_messages`` — the outbox: one row per message and subscription, written in the same
  transaction as the change it reports (``observatory_assets.lib.outbox.emit``). Its ``message_id`` is
  the ``webhook-id`` header: every attempt of a message carries the same one.
* ``webhook_deliveries`` — every attempt: status code, duration, error, and the next attempt. Kept 7 days.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-06
"""

from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

UPGRADE = """
CREATE TABLE webhook_subscriptions (
    id                    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name                  text NOT NULL UNIQUE,
    url                   text NOT NULL,
    event_types           text[] NOT NULL,
    min_sources           integer NOT NULL DEFAULT 3 CHECK (min_sources >= 1),
    threshold             real CHECK (threshold > 0 AND threshold < 1),
    secret                bytea NOT NULL,            -- Fernet token of the whsec_ secret
    previous_secret       bytea,                     -- still signed with until previous_secret_until
    previous_secret_until timestamptz,
    status                text NOT NULL DEFAULT 'enabled' CHECK (status IN ('enabled', 'disabled')),
    disabled_reason       text,
    failing_since         timestamptz,               -- first failure since the last success
    created_at            timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE webhook_messages (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_id      text NOT NULL UNIQUE,
    subscription_id bigint NOT NULL REFERENCES webhook_subscriptions (id) ON DELETE CASCADE,
    event_type      text NOT NULL,
    payload         jsonb NOT NULL,
    status          text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    created_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz
);
CREATE INDEX webhook_messages_due ON webhook_messages (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_messages_subscription ON webhook_messages (subscription_id);
CREATE INDEX webhook_messages_finished ON webhook_messages (finished_at) WHERE status <> 'pending';

CREATE TABLE webhook_deliveries (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_id      bigint NOT NULL REFERENCES webhook_messages (id) ON DELETE CASCADE,
    subscription_id bigint NOT NULL REFERENCES webhook_subscriptions (id) ON DELETE CASCADE,
    attempt         integer NOT NULL,
    attempted_at    timestamptz NOT NULL DEFAULT now(),
    status_code     integer,
    duration_ms     real NOT NULL,
    error           text,
    outcome         text NOT NULL CHECK (outcome IN ('delivered', 'retry', 'failed', 'disabled')),
    next_attempt_at timestamptz
);
CREATE INDEX webhook_deliveries_attempted ON webhook_deliveries (attempted_at);
CREATE INDEX webhook_deliveries_message ON webhook_deliveries (message_id);
CREATE INDEX webhook_deliveries_subscription ON webhook_deliveries (subscription_id, attempted_at);
"""

DOWNGRADE = """
DROP TABLE webhook_deliveries;
DROP TABLE webhook_messages;
DROP TABLE webhook_subscriptions;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
