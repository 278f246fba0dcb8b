"""Rows a digest is made of, written straight into the schema: sources, items, events and trends."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy import Engine, text

DIMENSIONS = 384
_CENTROID = "[" + ",".join(["1"] + ["0"] * (DIMENSIONS - 1)) + "]"


def _source(conn, name: str) -> int:
    return conn.execute(
        text(
            "INSERT INTO sources (name, type) VALUES (:n, 'rss') ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name "
            "RETURNING id"
        ),
        {"n": name},
    ).scalar_one()


def seed_event(
    engine: Engine,
    day: date,
    title: str,
    summary: str | None,
    items: list[tuple[str, str | None, str]],
    hour: int = 8,
) -> tuple[int, list[int]]:
    """One event on ``day`` whose items are ``(title, url, source name)``; the first is canonical.
    Returns (event id, item ids)."""
    at = datetime.combine(day, time(hour), tzinfo=UTC)
    with engine.begin() as conn:
        run = conn.execute(
            text(
                "INSERT INTO collection_runs (status, completed_at, ingested_at) VALUES ('completed', now(), now()) "
                "RETURNING id"
            )
        ).scalar_one()
        item_ids, sources = [], []
        for n, (item_title, url, source) in enumerate(items):
            source_id = _source(conn, source)
            digest = hashlib.sha256(f"{uuid.uuid4()}".encode()).digest()
            item_time = at + timedelta(minutes=n)
            item_id = conn.execute(
                text(
                    "INSERT INTO item_keys (source_id, external_id, content_hash, published_at, collection_run_id, "
                    "record_no) VALUES (:s, :e, :h, :t, :r, :n) RETURNING item_id"
                ),
                {"s": source_id, "e": uuid.uuid4().hex, "h": digest, "t": item_time, "r": run, "n": n},
            ).scalar_one()
            conn.execute(
                text(
                    "INSERT INTO raw_items (id, source_id, collection_run_id, record_no, external_id, url, title, text, "
                    "published_at, fetched_at, content_hash) VALUES (:id, :s, :r, :n, :e, :u, :ti, :tx, :t, :t, :h)"
                ),
                {"id": item_id, "s": source_id, "r": run, "n": n, "e": uuid.uuid4().hex, "u": url, "ti": item_title,
                 "tx": f"{item_title}. More text.", "t": item_time, "h": digest},
            )  # fmt: skip
            item_ids.append(item_id)
            sources.append(source_id)
        event_id = conn.execute(
            text(
                "INSERT INTO events (embedder, centroid, canonical_item_id, title, summary, first_seen_at, last_seen_at, "
                "item_count, source_count) VALUES ('hashing', CAST(:c AS vector), :canon, :ti, :su, :f, :l, :n, :ns) "
                "RETURNING id"
            ),
            {"c": _CENTROID, "canon": item_ids[0], "ti": title, "su": summary, "f": at, "l": at + timedelta(hours=1),
             "n": len(item_ids), "ns": len(set(sources))},
        ).scalar_one()  # fmt: skip
        for n, (item_id, source_id) in enumerate(zip(item_ids, sources)):
            conn.execute(
                text(
                    "INSERT INTO event_items (item_id, event_id, similarity, item_time, item_hash, source_id) "
                    "VALUES (:i, :e, 0.9, :t, :h, :s)"
                ),
                {"i": item_id, "e": event_id, "t": at + timedelta(minutes=n), "h": bytes([n]), "s": source_id},
            )
    return event_id, item_ids


def seed_trend(
    engine: Engine, day: date, name: str, title: str, log_odds: tuple[float, float], evidence: str, event_id: int
) -> int:
    """A trend with snapshots on the day before and on ``day`` (log-odds before, after) and one evidence line."""
    with engine.begin() as conn:
        trend_id = conn.execute(
            text("INSERT INTO trends (name, title) VALUES (:n, :t) RETURNING id"),
            {"n": name, "t": title},
        ).scalar_one()  # fmt: skip
        for d, lo in ((day - timedelta(days=1), log_odds[0]), (day, log_odds[1])):
            conn.execute(
                text("INSERT INTO trend_snapshots (trend_id, snapshot_date, log_odds, probability, evidence_count) "
                     "VALUES (:id, :d, :lo, 1 / (1 + exp(-:lo)), 3)"),
                {"id": trend_id, "d": d, "lo": lo},
            )  # fmt: skip
        conn.execute(
            text("INSERT INTO trend_evidence (trend_id, event_id, signal, credibility, corroboration, novelty, severity, "
                 "delta_log_odds, reasoning, event_at) VALUES (:id, :e, 'mention', 0.8, 0.5, 0.5, 0.5, :d, :r, :at)"),
            {"id": trend_id, "e": event_id, "d": log_odds[1] - log_odds[0], "r": evidence,
             "at": datetime.combine(day, time(9), tzinfo=UTC)},
        )  # fmt: skip
    return trend_id


def seed_day(engine: Engine, day: date, events: int = 3) -> list[tuple[int, list[int]]]:
    """``events`` plain events on ``day``, the first with the most sources."""
    out = []
    for n in range(events):
        items = [
            (f"Story {n} from source {s}", f"https://news{s}.example/{n}", f"source-{s}") for s in range(events - n)
        ]
        out.append(seed_event(engine, day, f"Event number {n}", f"Summary of event {n}.", items, hour=6 + n))
    return out
