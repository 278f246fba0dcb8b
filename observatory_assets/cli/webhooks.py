"""``observatory webhooks``: subscriptions, their delivery log, and a delivery cycle on demand."""

from __future__ import annotations

import json
import sys

import click

from observatory_assets.cli.context import Observatory, json_option, limit_option, pass_observatory
from observatory_assets.cli.runner import run_job
from observatory_assets.defs.webhooks.delivery import deliveries, redeliver
from observatory_assets.defs.webhooks.subscriptions import (
    DISABLED,
    ENABLED,
    add_subscription,
    cipher,
    remove_subscription,
    rotate_secret,
    set_status,
    subscription,
    subscriptions,
)
from observatory_assets.lib.outbox import queue_test_message


def _engine(obs: Observatory):
    """The database engine, once the webhook secrets can be read: without OBSERVATORY_SECRET_KEY every
    webhook command refuses, in one line."""
    cipher()
    return obs.engine


@click.group("webhooks")
def webhooks() -> None:
    """Webhook subscriptions, deliveries and redelivery."""


@webhooks.command("add")
@click.argument("url")
@click.option("--events", required=True, help="TYPE[,TYPE…], e.g. event.created,export.completed")
@click.option("--name", help="default: derived from the URL")
@click.option("--min-sources", type=click.IntRange(min=1), default=3, show_default=True,
              help="event.created: when an event reaches N sources")  # fmt: skip
@click.option("--threshold", type=float, help="trend.crossed: the probability crossed, either way")
@json_option("the subscription with its secret, as JSON")
@pass_observatory
def add(obs: Observatory, url: str, events: str, name: str | None, min_sources: int, threshold: float | None,
        as_json: bool) -> int:  # fmt: skip
    """Subscribe URL to event types; prints the secret once."""
    with _engine(obs).begin() as conn:
        added, secret = add_subscription(
            conn, url, [t.strip() for t in events.split(",") if t.strip()], name=name,
            min_sources=min_sources, threshold=threshold,
        )  # fmt: skip
    if as_json:
        click.echo(json.dumps({**added.as_json(), "secret": secret}))
    else:
        click.echo(f"webhook {added.name} (id {added.id}) → {added.url} for {', '.join(added.event_types)}")
        click.echo(f"secret (shown once, keep it to verify signatures): {secret}")
    return 0


@webhooks.command("list")
@json_option("a JSON list of subscriptions")
@pass_observatory
def list_subscriptions(obs: Observatory, as_json: bool) -> int:
    """The subscriptions."""
    with _engine(obs).connect() as conn:
        found = subscriptions(conn)
    if as_json:
        click.echo(json.dumps([s.as_json() for s in found]))
        return 0
    for s in found:
        extra = f" ({s.disabled_reason})" if s.disabled_reason else ""
        rotating = f" rotating until {s.rotating_until:%Y-%m-%d %H:%M}" if s.rotating_until else ""
        click.echo(f"{s.id:>4} {s.name:20} {s.status:8} {','.join(s.event_types):30} {s.url}{extra}{rotating}")
    return 0


def _status_command(command_name: str, status: str, what: str) -> click.Command:
    @webhooks.command(command_name, help=f"{what.capitalize()} to a subscription.")
    @click.argument("name")
    @pass_observatory
    def command(obs: Observatory, name: str) -> int:
        with _engine(obs).begin() as conn:
            changed = set_status(conn, name, status, None if status == ENABLED else "disabled by hand")
        click.echo(f"webhook {changed.name}: {changed.status}")
        return 0

    return command


_status_command("disable", DISABLED, "stop delivering")
_status_command("enable", ENABLED, "deliver again")


@webhooks.command("rotate-secret")
@click.argument("name")
@pass_observatory
def rotate(obs: Observatory, name: str) -> int:
    """A new secret; both are signed with for 24 h."""
    with _engine(obs).begin() as conn:
        rotated, secret = rotate_secret(conn, name)
    click.echo(f"webhook {rotated.name}: new secret (shown once): {secret}")
    click.echo(f"the previous secret still signs until {rotated.rotating_until:%Y-%m-%d %H:%M} UTC")
    return 0


@webhooks.command("remove")
@click.argument("name")
@pass_observatory
def remove(obs: Observatory, name: str) -> int:
    """Delete a subscription and its log."""
    with _engine(obs).begin() as conn:
        remove_subscription(conn, name)
    click.echo(f"webhook {name} removed")
    return 0


@webhooks.command("test")
@click.argument("name")
@pass_observatory
def test(obs: Observatory, name: str) -> int:
    """Queue a webhook.test message to a subscription."""
    with _engine(obs).begin() as conn:
        target = subscription(conn, name)
        message_id = queue_test_message(conn, target.id, target.name)
    click.echo(f"test message {message_id} queued for {target.name}; `observatory webhooks deliver` sends it now")
    return 0


@webhooks.command("deliveries")
@click.argument("name", required=False)
@click.option("--failed", is_flag=True, help="only attempts that did not deliver")
@limit_option(50, "at most this many attempts")
@json_option("a JSON list of attempts")
@pass_observatory
def list_deliveries(obs: Observatory, name: str | None, failed: bool, limit: int, as_json: bool) -> int:
    """The delivery attempts, newest first.

    Of subscription NAME, or of every subscription."""
    with _engine(obs).connect() as conn:
        if name:
            subscription(conn, name)
        found = deliveries(conn, name, failed_only=failed, limit=limit)
    if as_json:
        click.echo(json.dumps(found, default=str))
        return 0
    for d in found:
        click.echo(f"{d['id']:>6} {d['name']:16} {d['message_id']:36} {d['event_type']:18} #{d['attempt']} "
                   f"{d['status_code'] or '-':>4} {d['duration_ms']:>8.1f} ms {d['outcome']:9} {d['error'] or ''}")  # fmt: skip
    return 0


@webhooks.command("redeliver")
@click.argument("delivery", metavar="ID")
@pass_observatory
def redeliver_command(obs: Observatory, delivery: str) -> int:
    """Send a message again (ID: a delivery id or a msg_… id)."""
    with _engine(obs).begin() as conn:
        message_id = redeliver(conn, delivery)
    click.echo(f"message {message_id} queued again (same webhook-id)")
    return 0


@webhooks.command("deliver")
@pass_observatory
def deliver(obs: Observatory) -> int:
    """One delivery cycle now, in-process.

    Recorded in the Dagster instance as the daemon's runs are."""
    _engine(obs)
    outcome = run_job(obs.instance, "deliver_webhooks")
    if not outcome["success"]:
        print(f"observatory: webhook delivery failed (Dagster run {outcome['dagster_run']}): {outcome['error']}",
              file=sys.stderr)  # fmt: skip
        return 1
    click.echo(f"delivery cycle done (Dagster run {outcome['dagster_run']}): "
               f"{_delivery_metadata(obs.instance, outcome['dagster_run'])}")  # fmt: skip
    return 0


def _delivery_metadata(instance, run_id: str) -> str:
    """What the run's delivery step reported: attempted, delivered, retrying, failed."""
    import dagster as dg

    for record in instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.STEP_OUTPUT).records:
        entries = record.event_log_entry.dagster_event.step_output_data.metadata
        keys = ("attempted", "delivered", "retrying", "failed")
        return ", ".join(f"{k} {entries[k].value}" for k in keys if k in entries)
    return ""


COMMANDS = (webhooks,)
