"""Real parts of the scale-out tests: Redis started by the compose service's own script (Debian's
``redis-server`` on a free loopback port) and dagster-celery workers as separate process groups."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import time
from pathlib import Path

import psutil
import redis

from tests.support.helpers import ROOT
from tests.support.s3 import free_port_pairs

CELERY_YAML = ROOT / "docker" / "celery.yaml"


def _stop_group(process: subprocess.Popen | None) -> None:
    """SIGTERM to the process group, SIGKILL to whatever of it is left after ten seconds (Redis refuses to
    stop while it cannot write its append-only file, e.g. when its directory is gone)."""
    if process is None:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _group_alive(process):
            time.sleep(0.1)
        if not _group_alive(process):
            break
    process.wait(timeout=10)


def _group_alive(process: subprocess.Popen) -> bool:
    process.poll()  # reaps the leader, so a finished group stops answering
    try:
        os.killpg(process.pid, 0)
    except ProcessLookupError:
        return False
    return True


class RedisServer:
    """``docker/redis-start.sh`` (password required, append-only file) on 127.0.0.1; ``stop()`` and
    ``start()`` again keep its port and its data, as a restarted container does."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port_pairs(1)[0]  # outside the ephemeral range: it restarts on the same port
        self.password = secrets.token_hex(16)
        self.process: subprocess.Popen | None = None

    def url(self, database: int) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/{database}"

    def start(self) -> RedisServer:
        if self.process is not None and self.process.poll() is None:
            return self
        env = {"PATH": "/usr/bin:/bin", "REDIS_PASSWORD": self.password, "REDIS_PORT": str(self.port),
               "REDIS_BIND": "127.0.0.1", "REDIS_DATA_DIR": str(self.root / "data")}  # fmt: skip
        with open(self.root / "redis.log", "ab") as log:
            self.process = subprocess.Popen(["sh", str(ROOT / "docker" / "redis-start.sh")], env=env, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        deadline = time.monotonic() + 20
        while True:
            try:
                # closed at once: a client left to the collector may close its socket after the socket's own
                # finalizer ran (the order within a reference cycle is arbitrary), an unclosed-socket warning
                with redis.Redis(host="127.0.0.1", port=self.port, password=self.password, socket_timeout=1) as client:
                    client.ping()
                return self
            except redis.exceptions.ConnectionError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"redis did not start: {(self.root / 'redis.log').read_text()[-2000:]}"
                    ) from None
                time.sleep(0.1)

    def stop(self) -> None:
        _stop_group(self.process)


class CeleryWorker:
    """``dagster-celery worker start -A dagster_celery.app -y docker/celery.yaml -q ...`` with one pool
    process, in its own process group, on its own empty ``OBSERVATORY_HOME`` (everything a step needs
    comes from Postgres and S3), or, with ``share_home``, on the orchestrator's (a local object directory
    shared by workers on one machine)."""

    def __init__(self, env: dict[str, str], name: str, queues: list[str], root: Path, share_home: bool = False) -> None:
        self.name = name
        self.home = root / f"worker-{name}"
        (self.home / "dagster_home").mkdir(parents=True)
        # the same instance (runs and events in Postgres), in a directory of the worker's own
        (self.home / "dagster_home" / "dagster.yaml").write_text(
            (Path(env["DAGSTER_HOME"]) / "dagster.yaml").read_text()
        )
        self.env = {**env, "DAGSTER_HOME": str(self.home / "dagster_home")}
        if not share_home:
            self.env["OBSERVATORY_HOME"] = str(self.home)
        self.queues = queues
        self.process: subprocess.Popen | None = None

    def start(self) -> CeleryWorker:
        # one -q with a comma-separated list: dagster-celery passes each -q on as -Q, and Celery keeps the last
        command = ["dagster-celery", "worker", "start", "-A", "dagster_celery.app", "-y", str(CELERY_YAML),
                   "-n", self.name, "-q", ",".join(self.queues), "--", "--concurrency=1"]  # fmt: skip
        with open(self.home / "worker.log", "ab") as log:
            self.process = subprocess.Popen(command, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)  # fmt: skip
        return self

    def pool_pids(self) -> set[int]:
        """The processes that run steps: the pool children of the ``celery worker`` that
        ``dagster-celery worker start`` runs."""
        if self.process is None or self.process.poll() is not None:
            return set()
        try:
            return {pool.pid for celery in psutil.Process(self.process.pid).children() for pool in celery.children()}
        except psutil.NoSuchProcess:
            return set()

    def log(self) -> str:
        return (self.home / "worker.log").read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        _stop_group(self.process)


#: Everything ingestion and enrichment write, keyed by what the items are (source, external id), never
#: by identities that depend on the order of concurrent writers: equal fingerprints = equal archives.
_FINGERPRINTS = {
    "items": """
        SELECT concat_ws('|', s.name, r.external_id, r.collection_run_id, r.record_no, r.title, r.text, r.url,
                         r.published_at, r.language, r.language_confidence, r.text_search_config, r.search_vector,
                         r.search_terms_matched, encode(r.content_hash, 'hex'), r.processing_status, e.embedder,
                         e.embedding::text)
          FROM raw_items r JOIN sources s ON s.id = r.source_id LEFT JOIN item_embeddings e ON e.item_id = r.id""",
    "duplicates": """
        SELECT concat_ws('|', d.collection_run_id, d.record_no, s.name, d.external_id, d.matched_on)
          FROM item_duplicates d JOIN sources s ON s.id = d.source_id""",
    "rejected": "SELECT concat_ws('|', collection_run_id, record_no, reason) FROM rejected_items",
    "month_partitions": """
        SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = 'raw_items'::regclass""",
    "events": """
        SELECT string_agg(s.name || ':' || k.external_id, ',' ORDER BY s.name, k.external_id)
          FROM event_items ei JOIN item_keys k ON k.item_id = ei.item_id JOIN sources s ON s.id = k.source_id
         GROUP BY ei.event_id""",
}


def archive_fingerprint(engine) -> dict[str, tuple[int, str]]:
    """(rows, md5 of the sorted rows) of each part of the archive."""
    from sqlalchemy import text

    with engine.connect() as conn:
        return {
            part: tuple(
                conn.execute(
                    text(f"SELECT count(*), md5(coalesce(string_agg(x, E'\\n' ORDER BY x), '')) FROM ({query}) AS t(x)")
                ).one()
            )  # fmt: skip
            for part, query in _FINGERPRINTS.items()
        }
