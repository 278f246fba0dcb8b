"""Freshness end to end: from the poll that fetches a new story to its signed ``event.created`` at a subscriber.

Runs the platform as ``make ui`` does (``dagster dev`` on ``workspace.yaml``: webserver, daemon, sensors,
declarative automation) on a fresh embedded home in a temporary directory, with three outlets served by a
loopback feed server (``poll: 1m``) and a loopback webhook receiver subscribed to ``event.created`` (an event
reaching three sources). Every ``--interval`` seconds a new story appears in all three feeds. For each story
it records when the poll cycle fetched it (the last of its three outlets' fetches, from ``source_fetches``),
when a correctly signed ``event.created`` naming an event that holds its items reached the receiver, and
when the story first showed up among the events (the rows ``observatory events`` lists). The Dagster runs
in between give each stage's share:

- ``sensor_wait``: time between the fetch and the last pipeline run's end not covered by a run;
- ``run_launch``: requested → started, summed over the pipeline runs (subprocess start, code loading);
- ``step_time``: started → ended, over the pipeline runs (ingest, features, embeddings, events, …);
- ``outbox_wait``: from the end of the run that wrote the event to the signed POST at the receiver.

Prints one JSON object: p50 / p95 / max of both latencies, the stage shares, and the median interval
between fetches of one outlet (a ``poll: 1m`` source should be fetched every 60 s).

    python bench/freshness.py --stories 5 --interval 40
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

OUTLETS = ("harbour-gazette", "valley-courier", "coast-times")
#: Stories told by every outlet, each in its own words: distinct vocabulary, so each is one event.
STORIES = [
    ("Glacier bridge closed after cracks found in steel cables",
     "Engineers close the glacier bridge as cracks appear in its steel cables",
     "Cracked steel cables shut the glacier bridge, engineers say"),
    ("Orchestra cancels winter tour over violinists' pay dispute",
     "Violinists' pay dispute forces orchestra to cancel its winter tour",
     "Winter tour cancelled as orchestra and violinists fail to settle pay"),
    ("Rare owl species nests in city park for first time",
     "First nesting of rare owl species recorded in the city park",
     "City park welcomes nesting pair of a rare owl species"),
    ("Ferry operator adds night crossings to the northern islands",
     "Night crossings to the northern islands added by ferry operator",
     "Northern islands get night ferry crossings from the operator"),
    ("Museum returns bronze statues to their country of origin",
     "Bronze statues returned by the museum to their country of origin",
     "Country of origin receives bronze statues back from the museum"),
    ("Chess prodigy wins national title at age eleven",
     "Eleven-year-old chess prodigy takes the national title",
     "National chess title goes to an eleven-year-old prodigy"),
    ("Volcano observatory raises alert level after tremors",
     "Tremors lead volcano observatory to raise its alert level",
     "Alert level raised by the volcano observatory following tremors"),
    ("Bakery chain recalls rye bread over undeclared sesame",
     "Undeclared sesame prompts bakery chain to recall rye bread",
     "Rye bread recalled by bakery chain because of undeclared sesame"),
]  # fmt: skip


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _rss(outlet: str, entries: list[tuple[str, str, datetime]]) -> bytes:
    items = "".join(
        f"<item><guid>{guid}</guid><title>{title}</title><link>https://{outlet}.example/{guid}</link>"
        f"<description>{title}.</description><pubDate>{format_datetime(at, usegmt=True)}</pubDate></item>"
        for guid, title, at in entries
    )
    return (f'<?xml version="1.0"?><rss version="2.0"><channel><title>{outlet}</title>'
            f"<link>https://{outlet}.example/</link><description>{outlet}</description>{items}</channel></rss>"
            ).encode()  # fmt: skip


class Receiver:
    """A webhook subscriber on loopback: records each signed delivery's arrival time and body."""

    def __init__(self):
        self.deliveries: list[tuple[float, dict, dict[str, str], bytes]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                owner.deliveries.append((time.time(), json.loads(body), dict(self.headers), body))
                self.send_response(204)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"


def _run(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([str(Path(sys.executable).parent / "observatory"), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"observatory {' '.join(args)}: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


def _percentiles(values: list[float]) -> dict:
    if not values:
        return {"p50": None, "p95": None, "max": None, "n": 0}
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {"p50": round(statistics.median(ordered), 1), "p95": round(p95, 1), "max": round(ordered[-1], 1),
            "n": len(ordered)}  # fmt: skip


def _union(spans: list[tuple[float, float]], low: float, high: float) -> float:
    """Seconds of [low, high] covered by at least one span."""
    covered, cursor = 0.0, low
    for start, end in sorted((max(s, low), min(e, high)) for s, e in spans if e > low and s < high):
        if end > cursor:
            covered += end - max(start, cursor)
            cursor = end
    return covered


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stories", type=int, default=5, help=f"at most {len(STORIES)}")
    parser.add_argument("--interval", type=float, default=40.0, help="seconds between two new stories")
    parser.add_argument("--settle", type=float, default=240.0, help="seconds to wait for the last story")
    parser.add_argument("--keep", action="store_true", help="keep the temporary home (its path is printed)")
    args = parser.parse_args()
    stories = STORIES[: args.stories]

    from cryptography.fernet import Fernet

    home = Path(tempfile.mkdtemp(prefix="observatory-freshness-"))
    env = {
        **os.environ,
        "OBSERVATORY_HOME": str(home),
        "OBSERVATORY_SOURCES_DIR": str(home / "sources"),
        "OBSERVATORY_ALLOW_PRIVATE_NETWORKS": "1",  # the outlets and the subscriber are on loopback
        "OBSERVATORY_SECRET_KEY": Fernet.generate_key().decode(),
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
    }
    os.environ.update({k: env[k] for k in ("OBSERVATORY_HOME", "OBSERVATORY_SECRET_KEY")})
    try:
        _run(env, "services", "start")
        env["DAGSTER_HOME"] = _run(env, "env").split("=", 1)[1].strip()
        os.environ["DAGSTER_HOME"] = env["DAGSTER_HOME"]
        print(json.dumps(_measure(env, home, stories, args)))
    finally:
        subprocess.run([str(Path(sys.executable).parent / "observatory"), "services", "stop"], cwd=ROOT, env=env,
                       capture_output=True)  # fmt: skip
        if args.keep:
            print(f"home kept: {home}", file=sys.stderr)
        else:
            shutil.rmtree(home, ignore_errors=True)


def _measure(env: dict[str, str], home: Path, stories, args) -> dict:
    """Sync the outlets, subscribe the receiver, run ``dagster dev``, publish the stories and time them."""
    import dagster as dg

    from observatory_assets.lib.feed_server import Document, FeedServer
    from resources.embedded import resolve_database_urls
    from resources.postgres import engine_for

    engine = engine_for(resolve_database_urls()[0])
    receiver = Receiver()
    entries: dict[str, list] = {outlet: [] for outlet in OUTLETS}
    with FeedServer() as feeds:
        for outlet in OUTLETS:
            feeds.documents[f"/{outlet}.xml"] = Document(_rss(outlet, []))
        (home / "sources").mkdir()
        (home / "sources" / "catalog.yaml").write_text(
            "sources:\n"
            + "".join(f"  - {{name: {o}, url: '{feeds.url(f'/{o}.xml')}', format: rss, poll: 1m, "
                      "credibility: 0.8, language: en}\n" for o in OUTLETS)
            + f"designs:\n  - {{name: freshness, title: Freshness, terms: {{en: [bridge]}}, sources: [{', '.join(OUTLETS)}]}}\n"
        )  # fmt: skip
        _run(env, "sources", "sync")
        secret = json.loads(_run(env, "webhooks", "add", receiver.url, "--events", "event.created",
                                 "--min-sources", "3", "--json"))["secret"]  # fmt: skip
        log = open(home / "dagster-dev.log", "wb")  # noqa: SIM115 (closed with the process below)
        dagster = subprocess.Popen(
            [str(Path(sys.executable).parent / "dagster"), "dev", "-w", "workspace.yaml", "-h", "127.0.0.1",
             "-p", str(_free_port())], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        try:
            seen: dict[int, float] = {}
            published = _publish(
                engine, feeds, entries, stories, args.interval, lambda: _note_events(engine, stories, seen)
            )
            deadline = time.time() + args.settle
            while time.time() < deadline:
                _note_events(engine, stories, seen)
                if _delivered(engine, receiver, stories, secret) == len(stories) and len(seen) == len(stories):
                    break
                time.sleep(1)
            arrivals = _arrivals(engine, receiver, stories, secret)
            fetched = _fetch_times(engine, published)
            intervals = _poll_intervals(engine)
            instance = dg.DagsterInstance.get()
            runs = [r for r in instance.get_run_records() if r.start_time and r.end_time]
        finally:
            os.killpg(dagster.pid, signal.SIGTERM)
            try:
                dagster.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(dagster.pid, signal.SIGKILL)
            log.close()
    return _report(stories, fetched, arrivals, seen, runs, intervals)


def _publish(engine, feeds, entries, stories, interval: float, watch) -> list[float]:
    """Put each story into the three feeds, ``interval`` seconds apart, once the first poll cycle is done,
    calling ``watch`` every second meanwhile."""
    from sqlalchemy import text

    from observatory_assets.lib.feed_server import Document

    while True:  # the platform's first cycle (empty feeds) marks the start
        with engine.connect() as conn:
            if conn.execute(text("SELECT count(DISTINCT source_id) FROM source_fetches")).scalar() >= len(OUTLETS):
                break
        time.sleep(1)
    published = []
    for number, versions in enumerate(stories):
        now = datetime.now(UTC).replace(microsecond=0)
        for outlet, title in zip(OUTLETS, versions):
            entries[outlet].append((f"story-{number}-{outlet}", title, now))
            feeds.documents[f"/{outlet}.xml"] = Document(_rss(outlet, entries[outlet]), modified=now)
        published.append(time.time())
        until = time.time() + (interval if number < len(stories) - 1 else 0)
        while time.time() < until:
            watch()
            time.sleep(1)
    return published


def _story_of_event(conn, event_id: int) -> int | None:
    from sqlalchemy import text

    guids = conn.execute(
        text("SELECT r.external_id FROM event_items ei JOIN raw_items r ON r.id = ei.item_id WHERE ei.event_id = :e"),
        {"e": event_id},
    ).scalars()
    numbers = {int(g.split("-")[1]) for g in guids if g and g.startswith("story-")}
    return numbers.pop() if len(numbers) == 1 else None


def _note_events(engine, stories, seen: dict[int, float]) -> None:
    """When each story first appears in an event (what ``observatory events`` lists)."""
    from sqlalchemy import text

    with engine.connect() as conn:
        for number in range(len(stories)):
            if number in seen:
                continue
            found = conn.execute(
                text("""SELECT 1 FROM event_items ei JOIN raw_items r ON r.id = ei.item_id
                        WHERE r.external_id LIKE :prefix LIMIT 1"""),
                {"prefix": f"story-{number}-%"},
            ).first()
            if found:
                seen[number] = time.time()


def _arrivals(engine, receiver: Receiver, stories, secret: str) -> dict[int, float]:
    """The first verified ``event.created`` for each story."""
    from standardwebhooks import Webhook

    verifier, arrivals = Webhook(secret), {}
    with engine.connect() as conn:
        for at, payload, headers, body in list(receiver.deliveries):
            verifier.verify(body, {k.lower(): v for k, v in headers.items()})  # raises on a bad signature
            if payload.get("type") != "event.created":
                continue
            story = _story_of_event(conn, int(payload["data"]["event"]))
            if story is not None and story not in arrivals:
                arrivals[story] = at
    return arrivals


def _delivered(engine, receiver, stories, secret) -> int:
    return len(_arrivals(engine, receiver, stories, secret))


def _fetch_times(engine, published: list[float]) -> dict[int, float]:
    """For each story, the fetch that completed it: the last of its outlets' first fetches after publication."""
    from sqlalchemy import text

    fetched = {}
    with engine.connect() as conn:
        for number, at in enumerate(published):
            moments = conn.execute(
                text("""SELECT min(extract(epoch FROM f.fetched_at)) FROM source_fetches f
                        WHERE f.fetched_at >= to_timestamp(:at) AND f.items > 0 GROUP BY f.source_id"""),
                {"at": at},
            ).scalars().all()  # fmt: skip
            if len(moments) == len(OUTLETS):
                fetched[number] = float(max(moments))
    return fetched


def _poll_intervals(engine) -> list[float]:
    from sqlalchemy import text

    with engine.connect() as conn:
        return [float(v) for v in conn.execute(text(
            """SELECT extract(epoch FROM fetched_at - lag(fetched_at) OVER (PARTITION BY source_id ORDER BY fetched_at))
               FROM source_fetches""")).scalars() if v is not None]  # fmt: skip


def _report(stories, fetched, arrivals, seen, runs, intervals) -> dict:
    to_webhook, to_events, stages = [], [], {"sensor_wait": 0.0, "run_launch": 0.0, "step_time": 0.0,
                                             "outbox_wait": 0.0}  # fmt: skip
    for number in range(len(stories)):
        if number not in fetched:
            continue
        start = fetched[number]
        if number in seen:
            to_events.append(seen[number] - start)
        if number not in arrivals:
            continue
        end = arrivals[number]
        to_webhook.append(end - start)
        pipeline = [r for r in runs if r.dagster_run.job_name != "deliver_webhooks"
                    and r.end_time > start and r.create_timestamp.timestamp() < end]  # fmt: skip
        last_end = max([r.end_time for r in pipeline if r.end_time <= end] or [start])
        launch = _union([(r.create_timestamp.timestamp(), r.start_time) for r in pipeline], start, last_end)
        step = _union([(r.start_time, r.end_time) for r in pipeline], start, last_end)
        stages["run_launch"] += launch
        stages["step_time"] += step
        stages["sensor_wait"] += max(0.0, (last_end - start) - _union(
            [(r.create_timestamp.timestamp(), r.end_time) for r in pipeline], start, last_end))  # fmt: skip
        stages["outbox_wait"] += end - last_end
    total = sum(stages.values()) or 1.0
    return {
        "stories": len(stories),
        "fetch_to_webhook_s": _percentiles(to_webhook),
        "fetch_to_events_s": _percentiles(to_events),
        "stage_share": {name: round(value / total, 3) for name, value in stages.items()},
        "poll_interval_median_s": round(statistics.median(intervals), 1) if intervals else None,
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "cores": os.cpu_count(),
    }


if __name__ == "__main__":
    main()
