"""Plain helpers the tests share: files, databases, the CLI as a subprocess, ingested runs."""

from __future__ import annotations

import csv
import json
import subprocess
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from observatory_assets.defs.collection.catalog import load_catalog, source_states, sync_catalog
from observatory_assets.defs.enrichment.lexical import LexicalSpace, count_documents
from observatory_assets.defs.enrichment.spaces import calibrated
from observatory_assets.defs.ingestion.collect import SourceRequest, collect
from observatory_assets.defs.ingestion.loading import ingest_collection_run
from resources.postgres import create_database, drop_database  # noqa: F401 (shared with tests)

ROOT = Path(__file__).resolve().parents[2]


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def run(env, *args, timeout=300) -> str:
    done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{args} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def load_rows(engine, store, tmp_path, rows: list[dict], name: str = "run", query_design_id: int | None = None) -> int:
    """One ingested collection run of ``rows`` (title, text, source, published_at, key = external id)."""
    by_source: dict[str, list[str]] = defaultdict(list)
    for row in rows:
        record = {
            "id": row["key"],
            "title": row["title"],
            "text": row.get("text") or "",
            "published_at": row["published_at"],
        }
        by_source[row["source"]].append(json.dumps(record, ensure_ascii=False))
    requests = []
    for source, lines in sorted(by_source.items()):
        path = tmp_path / f"{name}-{source}.jsonl"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        requests.append(SourceRequest(source, "jsonl", path=str(path)))
    run_id = collect(engine, store, requests, query_design_id=query_design_id)
    ingest_collection_run(engine, store, run_id)
    return run_id


def labelled_rows(limit: int | None = None) -> list[dict]:
    """The project's labelled headlines (title, text, source, published_at, story), each with a ``key``
    for :func:`load_rows`; the first ``limit`` of them when given."""
    with open(ROOT / "bench" / "data" / "news_headlines_labelled.csv", newline="", encoding="utf-8") as handle:
        rows = [{**row, "key": f"row-{n}"} for n, row in enumerate(csv.DictReader(handle))]
    return rows[:limit] if limit else rows


def labelled_space(space_id: int = 1) -> LexicalSpace:
    """A lexical space whose document frequencies come from the project's labelled headlines."""
    documents = [(row["title"], row["text"]) for row in labelled_rows()]
    return calibrated(LexicalSpace(space_id, len(documents), count_documents(documents)), documents)


def catalog(tmp_path: Path, sources: list[dict], designs: list[dict] | None = None) -> Path:
    """A catalog directory with one file holding ``sources`` and ``designs``."""
    directory = tmp_path / "sources"
    write(directory / "catalog.yaml", json.dumps({"sources": sources, "designs": designs or []}))
    return directory


def sync(engine, directory: Path):
    """Load and sync the catalog of ``directory``; what the sync changed."""
    with engine.begin() as conn:
        return sync_catalog(conn, load_catalog(directory))


def source_state(engine, name: str) -> dict:
    """One catalog source's fields and polling state."""
    with engine.connect() as conn:
        return source_states(conn, name)[0]


def poll_until(condition: Callable[[], Any], timeout: float, interval: float = 0.05) -> Any:
    """``condition()``'s first truthy value, asked every ``interval`` seconds; its last (falsy) value once
    ``timeout`` seconds have passed (a guard against hanging: the caller asserts what it needed)."""
    deadline = time.monotonic() + timeout
    while not (found := condition()) and time.monotonic() < deadline:
        time.sleep(interval)
    return found
