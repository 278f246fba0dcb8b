"""Benchmark: publishing a 50-event digest and taking an item down.

In a scratch database on the configured (default: embedded) server, with a fresh real Ghost 6
(``make ghost``; tests/support/ghost.py) and a local object store, measures:

* ``first_publish_s`` — publishing the digest of a day with ``--events`` events (three sources each)
  to the static site (page, index, JSON Feed, Atom) and to Ghost (look-up, create);
* ``republish_s`` — publishing it again unchanged (a recorded skip), median of 5 (``first_republish_s``:
  the first of them); ``republish_ratio`` = republish / first publish (target: under 0.10);
* ``takedown_latency_s`` — seconds from ``request_takedown`` until the item's event is gone from the
  site's page and feeds and from the Ghost post, with a real ``dagster-daemon`` running the code
  location (its ``takedown_sensor`` starts ``takedown_job`` in a new process, as in production).
  Target: under 60 s. ``--in-process`` runs the sensor evaluation loop in this process instead.

Prints one JSON object. Usage: python bench/publishing.py [--events 50] [--in-process]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, scratch_database  # noqa: E402

from observatory_assets.defs.publishing.ghost import GhostClient  # noqa: E402
from observatory_assets.defs.publishing.publisher import publish_day  # noqa: E402
from observatory_assets.defs.publishing.site import ATOM_FEED_KEY, JSON_FEED_KEY, StaticTarget, page_key  # noqa: E402
from observatory_assets.defs.publishing.takedowns import request_takedown  # noqa: E402
from observatory_assets.defs.publishing.targets import GhostTarget  # noqa: E402
from resources.embedded import dagster_instance_yaml  # noqa: E402
from resources.object_store import LocalObjectStore  # noqa: E402
from resources.postgres import engine_for  # noqa: E402
from tests.support.digests import seed_event  # noqa: E402
from tests.support.ghost import GhostServer  # noqa: E402

DAY = date(2024, 5, 1)
VICTIM = "Event to take down"


def seed(engine, events: int) -> int:
    """``events`` events of three sources each; returns the id of the event that is taken down."""
    victim = None
    for n in range(events):
        title = VICTIM if n == events // 2 else f"Benchmark event {n}"
        items = [(f"{title}, report {s}", f"https://news{s}.example/{n}", f"source-{s}") for s in range(3)]
        event_id, _ = seed_event(engine, DAY, title, f"Summary of {title.lower()}.", items, hour=n % 24)
        victim = event_id if title == VICTIM else victim
    return victim


def timed_publish(engine, store, target, repeats: int = 5) -> dict:
    """The first publish, then ``repeats`` unchanged re-publishes (the median is the steady state; the
    first one, with cold caches, is reported too)."""
    started = time.perf_counter()
    first = publish_day(engine, store, target, DAY, actor="bench")
    first_s = time.perf_counter() - started
    again = []
    for _ in range(repeats):
        started = time.perf_counter()
        outcome = publish_day(engine, store, target, DAY, actor="bench")
        again.append(time.perf_counter() - started)
        assert outcome.action == "unchanged", outcome.action
    assert first.action == "created", first.action
    republish_s = statistics.median(again)
    return {
        "first_publish_s": round(first_s, 3),
        "republish_s": round(republish_s, 4),
        "first_republish_s": round(again[0], 4),
        "republish_ratio": round(republish_s / first_s, 4),
        "events": first.events,
        "external_id": first.external_id,
    }


def _text(store, key: str) -> str:
    if store.size(key) is None:
        return ""
    with store.open(key) as stream:
        return stream.read().decode()


def gone(store, client: GhostClient, post_id: str) -> tuple[bool, bool]:
    """(gone from the site's page and feeds, gone from the Ghost post)."""
    site = "".join(_text(store, key) for key in (page_key(DAY), JSON_FEED_KEY, ATOM_FEED_KEY))
    post = client.get_post(post_id, formats="html")
    return VICTIM not in site, post is not None and VICTIM not in (post.html or "")


def wait_until_gone(store, client, post_id: str, started: float, step, timeout: float = 300.0) -> dict:
    seen: dict = {}
    while time.perf_counter() - started < timeout:
        site_gone, ghost_gone = gone(store, client, post_id)
        now = round(time.perf_counter() - started, 2)
        if site_gone:
            seen.setdefault("site", now)
        if ghost_gone:
            seen.setdefault("ghost", now)
        if len(seen) == 2:
            return seen
        step()
    raise RuntimeError(f"the item was not gone after {timeout:.0f} s: {seen}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=50)
    parser.add_argument("--in-process", action="store_true")
    args = parser.parse_args()
    results: dict = {"events": args.events}
    with tempfile.TemporaryDirectory() as tmp, GhostServer() as ghost_server:
        objects = Path(tmp) / "objects"
        store = LocalObjectStore(objects)
        with scratch_database() as url, scratch_database(migrated=False) as dagster_url:
            engine = engine_for(url)
            victim = seed(engine, args.events)
            client = GhostClient(ghost_server.url, ghost_server.admin_key)
            results["static"] = timed_publish(engine, store, StaticTarget(store))
            results["ghost"] = timed_publish(engine, store, GhostTarget(client))
            post_id = results["ghost"].pop("external_id")
            results["static"].pop("external_id")

            home = Path(tmp) / "dagster_home"
            home.mkdir()
            (home / "dagster.yaml").write_text(yaml.safe_dump(dagster_instance_yaml(dagster_url)))
            env = {
                **os.environ, "OBSERVATORY_HOME": tmp, "OBSERVATORY_DATABASE_URL": url,
                "OBSERVATORY_DAGSTER_DATABASE_URL": dagster_url, "DAGSTER_HOME": str(home),
                "OBSERVATORY_GHOST_URL": ghost_server.url, "OBSERVATORY_GHOST_ADMIN_KEY": ghost_server.admin_key,
                "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
            }  # fmt: skip
            if args.in_process:
                latency = takedown_in_process(engine, store, client, post_id, victim, env)
            else:
                latency = takedown_with_daemon(engine, store, client, post_id, victim, env, home)
            results["takedown_latency_s"] = latency
            client.close()
            engine.dispose()
    print(json.dumps(results))


def takedown_with_daemon(engine, store, client, post_id, victim, env, home) -> dict:
    log = open(home / "daemon.log", "w")
    daemon = subprocess.Popen(
        [str(Path(sys.executable).parent / "dagster-daemon"), "run", "-w", str(ROOT / "workspace.yaml")],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        time.sleep(30)  # let the daemon load the code location and tick the sensor once (nothing due)
        started = time.perf_counter()
        request_takedown(engine, "event", str(victim), "benchmark", "bench")
        seen = wait_until_gone(store, client, post_id, started, lambda: time.sleep(0.5))
        return {**seen, "mode": "dagster-daemon (sensor every 5 s, run in a new process)"}
    finally:
        os.killpg(daemon.pid, 15)
        daemon.wait(30)
        log.close()


def takedown_in_process(engine, store, client, post_id, victim, env) -> dict:
    import dagster as dg

    os.environ.update(env)
    from observatory_assets.definitions import defs
    from sensors.publishing import TAKEDOWN_SENSOR_INTERVAL_SECONDS, takedown_sensor

    resources = {k: v for k, v in defs.resources.items() if k in ("postgres", "object_store", "publish_target")}
    instance = dg.DagsterInstance.ephemeral()
    job = defs.resolve_job_def("takedown_job")

    def tick() -> None:
        with dg.build_sensor_context(instance=instance, resources=resources) as context:
            if isinstance(takedown_sensor(context), dg.RunRequest):
                job.execute_in_process(instance=instance)
                return
        time.sleep(TAKEDOWN_SENSOR_INTERVAL_SECONDS)

    started = time.perf_counter()
    request_takedown(engine, "event", str(victim), "benchmark", "bench")
    seen = wait_until_gone(store, client, post_id, started, tick)
    return {**seen, "mode": "in-process sensor loop"}


if __name__ == "__main__":
    main()
