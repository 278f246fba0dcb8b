"""``observatory webhooks``: subscriptions, their delivery log, and a delivery cycle on demand."""

from __future__ import annotations

import json
import sys

from sqlalchemy import text

from observatory_assets.cli.runner import engine_and_store, run_job
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
from observatory_assets.lib.outbox import TEST, envelope, new_message_id
from resources.embedded import prepare_dagster_home


def _engine():
    cipher()  # without OBSERVATORY_SECRET_KEY every webhook command refuses, in one line
    engine, _ = engine_and_store()
    return engine


def cmd_add(args) -> int:
    with _engine().begin() as conn:
        added, secret = add_subscription(
            conn, args.url, [t.strip() for t in args.events.split(",") if t.strip()], name=args.name,
            min_sources=args.min_sources, threshold=args.threshold,
        )  # fmt: skip
    if args.json:
        print(json.dumps({**added.as_json(), "secret": secret}))
    else:
        print(f"webhook {added.name} (id {added.id}) → {added.url} for {', '.join(added.event_types)}")
        print(f"secret (shown once, keep it to verify signatures): {secret}")
    return 0


def cmd_list(args) -> int:
    with _engine().connect() as conn:
        found = subscriptions(conn)
    if args.json:
        print(json.dumps([s.as_json() for s in found]))
        return 0
    for s in found:
        extra = f" ({s.disabled_reason})" if s.disabled_reason else ""
        rotating = f" rotating until {s.rotating_until:%Y-%m-%d %H:%M}" if s.rotating_until else ""
        print(f"{s.id:>4} {s.name:20} {s.status:8} {','.join(s.event_types):30} {s.url}{extra}{rotating}")
    return 0


def _status(status: str):
    def command(args) -> int:
        with _engine().begin() as conn:
            changed = set_status(conn, args.name, status, None if status == ENABLED else "disabled by hand")
        print(f"webhook {changed.name}: {changed.status}")
        return 0

    return command


def cmd_rotate(args) -> int:
    with _engine().begin() as conn:
        rotated, secret = rotate_secret(conn, args.name)
    print(f"webhook {rotated.name}: new secret (shown once): {secret}")
    print(f"the previous secret still signs until {rotated.rotating_until:%Y-%m-%d %H:%M} UTC")
    return 0


def cmd_remove(args) -> int:
    with _engine().begin() as conn:
        remove_subscription(conn, args.name)
    print(f"webhook {args.name} removed")
    return 0


def cmd_test(args) -> int:
    with _engine().begin() as conn:
        target = subscription(conn, args.name)
        message_id = new_message_id()
        conn.execute(
            text(
                "INSERT INTO webhook_messages (message_id, subscription_id, event_type, payload) "
                "VALUES (:id, :subscription, :type, CAST(:payload AS jsonb))"
            ),
            {"id": message_id, "subscription": target.id, "type": TEST,
             "payload": envelope(TEST, {"subscription": target.name})},
        )  # fmt: skip
    print(f"test message {message_id} queued for {target.name}; `observatory webhooks deliver` sends it now")
    return 0


def cmd_deliveries(args) -> int:
    with _engine().connect() as conn:
        if args.name:
            subscription(conn, args.name)
        found = deliveries(conn, args.name, failed_only=args.failed, limit=args.limit)
    if args.json:
        print(json.dumps(found, default=str))
        return 0
    for d in found:
        print(f"{d['id']:>6} {d['name']:16} {d['message_id']:36} {d['event_type']:18} #{d['attempt']} "
              f"{d['status_code'] or '-':>4} {d['duration_ms']:>8.1f} ms {d['outcome']:9} {d['error'] or ''}")  # fmt: skip
    return 0


def cmd_redeliver(args) -> int:
    with _engine().begin() as conn:
        message_id = redeliver(conn, args.id)
    print(f"message {message_id} queued again (same webhook-id)")
    return 0


def cmd_deliver(args) -> int:
    import dagster as dg

    _engine()
    prepare_dagster_home()
    with dg.DagsterInstance.get() as instance:
        outcome = run_job(instance, "deliver_webhooks")
    if not outcome["success"]:
        print(
            f"observatory: webhook delivery failed (Dagster run {outcome['dagster_run']}): {outcome['error']}",
            file=sys.stderr,
        )
        return 1
    with dg.DagsterInstance.get() as instance:
        metadata = _delivery_metadata(instance, outcome["dagster_run"])
    print(f"delivery cycle done (Dagster run {outcome['dagster_run']}): {metadata}")
    return 0


def _delivery_metadata(instance, run_id: str) -> str:
    import dagster as dg

    for record in instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.STEP_OUTPUT).records:
        entries = record.event_log_entry.dagster_event.step_output_data.metadata
        keys = ("attempted", "delivered", "retrying", "failed")
        return ", ".join(f"{k} {entries[k].value}" for k in keys if k in entries)
    return ""


def register_commands(subparsers) -> None:
    """``observatory webhooks …``."""
    webhooks = subparsers.add_parser("webhooks", help="webhook subscriptions, deliveries and redelivery")
    sub = webhooks.add_subparsers(dest="webhooks_command", required=True)

    add = sub.add_parser("add", help="subscribe URL to event types; prints the secret once")
    add.add_argument("url")
    add.add_argument("--events", required=True, help="TYPE[,TYPE…], e.g. event.created,export.completed")
    add.add_argument("--name")
    add.add_argument("--min-sources", type=int, default=3, help="event.created: when an event reaches N sources")
    add.add_argument("--threshold", type=float, help="trend.crossed: the probability crossed, either way")
    add.add_argument("--json", action="store_true")
    add.set_defaults(func=cmd_add)

    listing = sub.add_parser("list", help="the subscriptions")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=cmd_list)

    for name, status, what in (("disable", DISABLED, "stop delivering"), ("enable", ENABLED, "deliver again")):
        command = sub.add_parser(name, help=f"{what} to a subscription")
        command.add_argument("name")
        command.set_defaults(func=_status(status))

    rotate = sub.add_parser("rotate-secret", help="a new secret; both are signed with for 24 h")
    rotate.add_argument("name")
    rotate.set_defaults(func=cmd_rotate)

    remove = sub.add_parser("remove", help="delete a subscription and its log")
    remove.add_argument("name")
    remove.set_defaults(func=cmd_remove)

    test = sub.add_parser("test", help="queue a webhook.test message to a subscription")
    test.add_argument("name")
    test.set_defaults(func=cmd_test)

    log = sub.add_parser("deliveries", help="the delivery attempts, newest first")
    log.add_argument("name", nargs="?")
    log.add_argument("--failed", action="store_true", help="only attempts that did not deliver")
    log.add_argument("--limit", type=int, default=50)
    log.add_argument("--json", action="store_true")
    log.set_defaults(func=cmd_deliveries)

    again = sub.add_parser("redeliver", help="send a message again (a delivery id or msg_… id)")
    again.add_argument("id")
    again.set_defaults(func=cmd_redeliver)

    deliver = sub.add_parser("deliver", help="one delivery cycle now, in-process, recorded in the Dagster instance")
    deliver.set_defaults(func=cmd_deliver)
