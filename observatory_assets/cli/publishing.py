"""``observatory publish``, ``site serve``, ``takedown request | cancel | list | run`` and ``audit``."""

from __future__ import annotations

import json
import sys
from datetime import UTC, date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import click

from observatory_assets.cli.context import UTC_DAY, Observatory, json_option, limit_option, pass_observatory
from observatory_assets.cli.runner import run_job
from observatory_assets.defs.publishing.assets import FIRST_DIGEST_DAY
from observatory_assets.defs.publishing.audit import audit_rows
from observatory_assets.defs.publishing.publisher import publish_record
from observatory_assets.defs.publishing.site import INDEX_KEY, SITE_PREFIX
from observatory_assets.defs.publishing.takedowns import cancel_takedown, list_takedowns, request_takedown
from observatory_assets.defs.publishing.targets import TARGET_KINDS

DEFAULT_PORT = 8765


def publish(obs: Observatory, day: date, target: str | None = None) -> dict:
    """Run the day's ``publish_records`` partition in-process, as the schedule would; returns the run's
    outcome and the record it left, with a link to it signed now (a static page's link expires)."""
    ops_config = {"publish_records": {"target": target or ""}}
    outcome = run_job(obs.instance, "publish_digest", partition_key=day.isoformat(), ops_config=ops_config)
    kind = target or obs.settings.publish_target
    with obs.engine.connect() as conn:
        record = publish_record(conn, kind, day)
    if record is not None:
        record["link"] = obs.store.download_url(record["external_id"]) if kind == "static" else record["url"]
    outcome.update(target=kind, day=day.isoformat(), record=record)
    if kind == "static":
        outcome["site"] = obs.store.download_url(INDEX_KEY)
    return outcome


@click.command("publish")
@click.option("--date", "day", type=UTC_DAY, help="the UTC day (default: yesterday)")
@click.option("--target", type=click.Choice(TARGET_KINDS), help="default: OBSERVATORY_PUBLISH_TARGET (static)")
@pass_observatory
def publish_command(obs: Observatory, day: date | None, target: str | None) -> int:
    """Publish a day's digest in-process (default: yesterday, UTC)."""
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    day = day or yesterday
    if not FIRST_DIGEST_DAY <= day.isoformat() <= yesterday.isoformat():
        raise ValueError(
            f"a digest can be published for a day from {FIRST_DIGEST_DAY} to {yesterday} (days that have ended)"
        )
    outcome = publish(obs, day, target)
    if not outcome["success"]:
        print(f"observatory: publishing {outcome['day']} to {outcome['target']} failed "
              f"(Dagster run {outcome['dagster_run']}): {outcome.get('error', 'see the run logs')}", file=sys.stderr)  # fmt: skip
        return 1
    record = outcome["record"]
    if record is None:
        click.echo(f"{outcome['day']}: nothing to publish to {outcome['target']} (no events or trend moves that day)")
    else:
        state = "live" if record["live"] else "not shown"
        click.echo(f"{outcome['day']}: publish record {record['id']} on {outcome['target']} ({record['status']}, "
                   f"{state}): {record['link']}")  # fmt: skip
    if "site" in outcome:
        click.echo(f"site: {outcome['site']}  (or: observatory site serve)")
    return 0


class _SiteHandler(BaseHTTPRequestHandler):
    store = None  # set by `observatory site serve`

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


@click.group("site")
def site() -> None:
    """The static site."""


@site.command("serve")
@click.option("--port", type=click.IntRange(0, 65535), default=DEFAULT_PORT, show_default=True,
              help="port on 127.0.0.1 (0: any free one)")  # fmt: skip
@pass_observatory
def serve(obs: Observatory, port: int) -> int:
    """Serve the static site on 127.0.0.1."""
    _SiteHandler.store = obs.store
    try:
        server = ThreadingHTTPServer(("127.0.0.1", port), _SiteHandler)
    except OSError as error:
        print(f"observatory: cannot listen on 127.0.0.1:{port}: {error.strerror}", file=sys.stderr)
        return 1
    click.echo(f"serving the static site on http://127.0.0.1:{server.server_address[1]}/ (Ctrl-C stops)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


@click.group("takedown")
def takedown() -> None:
    """Withdraw items from every publication, then delete them."""


@takedown.command("request")
@click.option("--item", type=int, help="an item id (give one of --item, --url, --event)")
@click.option("--url", help="every item with this URL")
@click.option("--event", type=int, help="every item of this event")
@click.option("--reason", required=True, help="why (kept in the audit trail)")
@click.option("--requested-by", required=True, help="who asks (kept in the audit trail)")
@click.option("--grace-hours", type=click.FloatRange(min=0), help="default OBSERVATORY_TAKEDOWN_GRACE_HOURS (72)")
@pass_observatory
def request(obs: Observatory, item: int | None, url: str | None, event: int | None, reason: str, requested_by: str,
            grace_hours: float | None) -> int:  # fmt: skip
    """Record a pending takedown.

    Its items are withdrawn from every publication at once and deleted after the grace period."""
    subjects = [(kind, value) for kind, value in (("item", item), ("url", url), ("event", event)) if value is not None]
    if len(subjects) != 1:
        raise click.UsageError("give exactly one of --item, --url or --event")
    kind, subject = subjects[0]
    grace = timedelta(hours=grace_hours if grace_hours is not None else obs.settings.takedown_grace_hours)
    request_id = request_takedown(obs.engine, kind, str(subject), reason, requested_by, grace)
    click.echo(f"takedown request {request_id} recorded (pending): its items are withdrawn now; stage 1 runs with "
               f"the daemon's takedown_sensor or `observatory takedown run`, deletion after "
               f"{grace.total_seconds() / 3600:g} h")  # fmt: skip
    return 0


@takedown.command("cancel")
@click.argument("request_id", metavar="ID", type=int)
@click.option("--by", default="cli", show_default=True, help="who cancels (audit)")
@pass_observatory
def cancel(obs: Observatory, request_id: int, by: str) -> int:
    """Cancel a takedown before its deletion."""
    cancel_takedown(obs.engine, request_id, by)
    click.echo(f"takedown request {request_id} cancelled: nothing will be deleted; the next takedown pass restores "
               "its records")  # fmt: skip
    return 0


@takedown.command("list")
@json_option("a JSON list of requests")
@pass_observatory
def list_requests(obs: Observatory, as_json: bool) -> int:
    """Requests and their stages."""
    requests = list_takedowns(obs.engine)
    if as_json:
        click.echo(json.dumps(requests, indent=1, default=str))
        return 0
    for r in requests:
        deadline = r["grace_until"][:16] if r["grace_until"] else "-"
        error = f"  last error: {r['last_error'][:80]}" if r["last_error"] else ""
        click.echo(f"{r['id']:>5} {r['status']:10} {r['subject_kind']}:{r['subject']}  items={r['items']} "
                   f"records={r['records']} deadline={deadline} by={r['requested_by']}{error}")  # fmt: skip
    if not requests:
        click.echo("no takedown requests")
    return 0


@takedown.command("run")
@pass_observatory
def run(obs: Observatory) -> int:
    """Process every due stage in-process (no daemon needed)."""
    outcome = run_job(obs.instance, "takedown_job", ops_config={"process_due_takedowns": {"force": True}})
    if not outcome["success"]:
        print(f"observatory: takedown run failed (Dagster run {outcome['dagster_run']}): "
              f"{outcome.get('error', 'see the run logs')}", file=sys.stderr)  # fmt: skip
        return 1
    click.echo(f"takedown stages processed (Dagster run {outcome['dagster_run']}); see `observatory takedown list`")
    return 0


@click.command("audit")
@click.option("--since", type=UTC_DAY, help="only entries from this UTC day on")
@json_option("a JSON list of entries")
@limit_option(200, "at most this many entries")
@pass_observatory
def audit(obs: Observatory, since: date | None, as_json: bool, limit: int) -> int:
    """The audit trail, newest first."""
    rows = audit_rows(obs.engine, since, limit)
    if as_json:
        click.echo(json.dumps(rows, indent=1, default=str))
        return 0
    for r in rows:
        click.echo(f"{r['at'][:19]} {r['outcome']:7} {r['action']:17} {r['object_type']}:{r['object_id'] or '-'} "
                   f"target={r['target'] or '-'} actor={r['actor']}")  # fmt: skip
    return 0


COMMANDS = (publish_command, site, takedown, audit)
