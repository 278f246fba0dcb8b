"""``observatory publish``, ``site serve``, ``takedown request|cancel|list|run`` and ``audit``."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from sqlalchemy import text

from observatory_assets.cli.runner import engine_and_store, run_job
from observatory_assets.defs.publishing.assets import FIRST_DIGEST_DAY
from observatory_assets.defs.publishing.audit import audit_rows
from observatory_assets.defs.publishing.site import INDEX_KEY, SITE_PREFIX
from observatory_assets.defs.publishing.takedowns import cancel_takedown, list_takedowns, request_takedown
from observatory_assets.defs.publishing.targets import TARGET_KINDS
from resources.embedded import prepare_dagster_home
from resources.settings import platform_settings

DEFAULT_PORT = 8765


def _day(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {value!r}") from None


def _run(name: str, partition_key: str | None = None, ops_config: dict | None = None) -> dict:
    import dagster as dg

    prepare_dagster_home()
    with dg.DagsterInstance.get() as instance:
        return run_job(instance, name, partition_key=partition_key, ops_config=ops_config)


def publish(day: date, target: str | None = None) -> dict:
    """Run the day's ``publish_records`` partition in-process, as the schedule would; returns the run's
    outcome and the record it left, with a link to it signed now (a static page's link expires)."""
    outcome = _run("publish_digest", day.isoformat(), {"publish_records": {"target": target or ""}})
    engine, store = engine_and_store()
    kind = target or platform_settings().publish_target
    with engine.connect() as conn:
        record = conn.execute(
            text("SELECT id, status, live, external_id, url, content_hash FROM publish_records "
                 "WHERE target = :t AND digest_date = :d"),
            {"t": kind, "d": day},
        ).mappings().one_or_none()  # fmt: skip
    if record is not None:
        record = {**record, "link": store.download_url(record["external_id"]) if kind == "static" else record["url"]}
    outcome.update(target=kind, day=day.isoformat(), record=record)
    if kind == "static":
        outcome["site"] = store.download_url(INDEX_KEY)
    return outcome


def cmd_publish(args: argparse.Namespace) -> int:
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    day = args.date or yesterday
    if not FIRST_DIGEST_DAY <= day.isoformat() <= yesterday.isoformat():
        raise ValueError(
            f"a digest can be published for a day from {FIRST_DIGEST_DAY} to {yesterday} (days that have ended)"
        )
    outcome = publish(day, args.target)
    if not outcome["success"]:
        print(f"observatory: publishing {outcome['day']} to {outcome['target']} failed "
              f"(Dagster run {outcome['dagster_run']}): {outcome.get('error', 'see the run logs')}", file=sys.stderr)  # fmt: skip
        return 1
    record = outcome["record"]
    if record is None:
        print(f"{outcome['day']}: nothing to publish to {outcome['target']} (no events or trend moves that day)")
    else:
        state = "live" if record["live"] else "not shown"
        print(
            f"{outcome['day']}: publish record {record['id']} on {outcome['target']} ({record['status']}, {state}): {record['link']}"
        )
    if "site" in outcome:
        print(f"site: {outcome['site']}  (or: observatory site serve)")
    return 0


class _SiteHandler(BaseHTTPRequestHandler):
    store = None  # set by cmd_site_serve

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        path = self.path.split("?", 1)[0].lstrip("/") or "index.html"
        key = SITE_PREFIX + path
        types = {".html": "text/html; charset=utf-8", ".json": "application/feed+json", ".atom": "application/atom+xml"}
        try:
            if ".." in path.split("/") or key.endswith("/") or self.store.size(key) is None:
                raise FileNotFoundError(key)
            with self.store.open(key) as stream:
                body = stream.read()
        except (FileNotFoundError, ValueError):
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header(
            "Content-Type", next((t for ext, t in types.items() if key.endswith(ext)), "application/octet-stream")
        )
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:  # noqa: A002
        print(f"{self.address_string()} {format % args}", file=sys.stderr)


def cmd_site_serve(args: argparse.Namespace) -> int:
    _, store = engine_and_store()
    _SiteHandler.store = store
    try:
        server = ThreadingHTTPServer(("127.0.0.1", args.port), _SiteHandler)
    except OSError as error:
        print(f"observatory: cannot listen on 127.0.0.1:{args.port}: {error.strerror}", file=sys.stderr)
        return 1
    print(f"serving the static site on http://127.0.0.1:{server.server_address[1]}/ (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def cmd_takedown_request(args: argparse.Namespace) -> int:
    kind, subject = next((k, v) for k, v in (("item", args.item), ("url", args.url), ("event", args.event)) if v)
    grace = timedelta(
        hours=args.grace_hours if args.grace_hours is not None else platform_settings().takedown_grace_hours
    )
    engine, _ = engine_and_store()
    request_id = request_takedown(engine, kind, str(subject), args.reason, args.requested_by, grace)
    print(f"takedown request {request_id} recorded (pending): its items are withdrawn now; stage 1 runs with "
          f"the daemon's takedown_sensor or `observatory takedown run`, deletion after {grace.total_seconds() / 3600:g} h")  # fmt: skip
    return 0


def cmd_takedown_cancel(args: argparse.Namespace) -> int:
    engine, _ = engine_and_store()
    cancel_takedown(engine, args.id, args.by)
    print(f"takedown request {args.id} cancelled: nothing will be deleted; the next takedown pass restores its records")
    return 0


def cmd_takedown_list(args: argparse.Namespace) -> int:
    engine, _ = engine_and_store()
    requests = list_takedowns(engine)
    if args.json:
        print(json.dumps(requests, indent=1, default=str))
        return 0
    for r in requests:
        deadline = r["grace_until"][:16] if r["grace_until"] else "-"
        error = f"  last error: {r['last_error'][:80]}" if r["last_error"] else ""
        print(f"{r['id']:>5} {r['status']:10} {r['subject_kind']}:{r['subject']}  items={r['items']} records={r['records']} "
              f"deadline={deadline} by={r['requested_by']}{error}")  # fmt: skip
    if not requests:
        print("no takedown requests")
    return 0


def cmd_takedown_run(args: argparse.Namespace) -> int:
    outcome = _run("takedown_job", ops_config={"process_due_takedowns": {"force": True}})
    if not outcome["success"]:
        print(f"observatory: takedown run failed (Dagster run {outcome['dagster_run']}): "
              f"{outcome.get('error', 'see the run logs')}", file=sys.stderr)  # fmt: skip
        return 1
    print(f"takedown stages processed (Dagster run {outcome['dagster_run']}); see `observatory takedown list`")
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    engine, _ = engine_and_store()
    rows = audit_rows(engine, args.since, args.limit)
    if args.json:
        print(json.dumps(rows, indent=1, default=str))
        return 0
    for r in rows:
        print(f"{r['at'][:19]} {r['outcome']:7} {r['action']:17} {r['object_type']}:{r['object_id'] or '-'} "
              f"target={r['target'] or '-'} actor={r['actor']}")  # fmt: skip
    return 0


def register_commands(subparsers) -> None:
    """``publish``, ``site``, ``takedown`` and ``audit``."""
    pub = subparsers.add_parser("publish", help="publish a day's digest in-process (default: yesterday, UTC)")
    pub.add_argument("--date", type=_day, help="YYYY-MM-DD (UTC day)")
    pub.add_argument("--target", choices=TARGET_KINDS, help="default: OBSERVATORY_PUBLISH_TARGET (static)")
    pub.set_defaults(func=cmd_publish)

    site = subparsers.add_parser("site", help="the static site").add_subparsers(dest="site_command", required=True)
    serve = site.add_parser("serve", help="serve the static site on 127.0.0.1")
    serve.add_argument("--port", type=int, default=DEFAULT_PORT)
    serve.set_defaults(func=cmd_site_serve)

    takedown = subparsers.add_parser("takedown", help="withdraw items from every publication, then delete them")
    actions = takedown.add_subparsers(dest="takedown_command", required=True)
    request = actions.add_parser("request", help="record a pending takedown")
    subject = request.add_mutually_exclusive_group(required=True)
    subject.add_argument("--item", type=int, help="an item id")
    subject.add_argument("--url", help="every item with this URL")
    subject.add_argument("--event", type=int, help="every item of this event")
    request.add_argument("--reason", required=True)
    request.add_argument("--requested-by", required=True)
    request.add_argument("--grace-hours", type=float, help="default OBSERVATORY_TAKEDOWN_GRACE_HOURS (72)")
    request.set_defaults(func=cmd_takedown_request)
    cancel = actions.add_parser("cancel", help="cancel a takedown before its deletion")
    cancel.add_argument("id", type=int)
    cancel.add_argument("--by", default="cli", help="who cancels (audit)")
    cancel.set_defaults(func=cmd_takedown_cancel)
    listing = actions.add_parser("list", help="requests and their stages")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=cmd_takedown_list)
    actions.add_parser("run", help="process every due stage in-process (no daemon needed)").set_defaults(
        func=cmd_takedown_run
    )

    audit = subparsers.add_parser("audit", help="the audit trail, newest first")
    audit.add_argument("--since", type=_day, help="YYYY-MM-DD")
    audit.add_argument("--json", action="store_true")
    audit.add_argument("--limit", type=int, default=200)
    audit.set_defaults(func=cmd_audit)
