"""The invariants of loaded items, each measured either for one collection run or for the whole archive.

Per-run measurements (``run_id`` given) cost index lookups on what that run
wrote, so checking an ingestion never grows with the archive; archive-wide
measurements (``run_id=None``) are the weekly integrity audit.
"""

from __future__ import annotations

from sqlalchemy import Connection, text

# A run's items are each registered in item_keys under their own id with their own keys; item_keys is unique on
# (source, external_id) and on content_hash, so no other item can hold the same keys.
_RUN_KEY_CONFLICTS = """
SELECT count(*) FILTER (WHERE k.item_id IS NULL OR k.source_id <> r.source_id OR k.external_id <> r.external_id),
       count(*) FILTER (WHERE k.item_id IS NULL OR k.content_hash <> r.content_hash)
  FROM raw_items r LEFT JOIN item_keys k ON k.item_id = r.id
 WHERE r.collection_run_id = :run_id
"""
_ARCHIVE_KEY_CONFLICTS = """
SELECT (SELECT count(*) FROM (SELECT 1 FROM raw_items GROUP BY source_id, external_id HAVING count(*) > 1) d),
       (SELECT count(*) FROM (SELECT 1 FROM raw_items GROUP BY content_hash HAVING count(*) > 1) d)
"""

_DEFAULT_PARTITION_ROWS = """
SELECT count(*) FILTER (WHERE published_at IS NULL), count(*) FILTER (WHERE published_at IS NOT NULL)
  FROM raw_items_default
 WHERE CAST(:run_id AS bigint) IS NULL OR collection_run_id = :run_id
"""

_ACCOUNTING = """
SELECT r.id, r.items_collected,
       (SELECT count(*) FROM item_keys k WHERE k.collection_run_id = r.id)
     + (SELECT count(*) FROM item_duplicates d WHERE d.collection_run_id = r.id)
     + (SELECT count(*) FROM rejected_items x WHERE x.collection_run_id = r.id) AS accounted
  FROM collection_runs r
 WHERE r.ingested_at IS NOT NULL AND (CAST(:run_id AS bigint) IS NULL OR r.id = :run_id)
"""


def key_conflicts(conn: Connection, run_id: int | None = None) -> dict[str, int]:
    """Items sharing a ``(source, external_id)`` or a content hash with another item."""
    if run_id is None:
        by_key, by_hash = conn.execute(text(_ARCHIVE_KEY_CONFLICTS)).one()
    else:
        by_key, by_hash = conn.execute(text(_RUN_KEY_CONFLICTS), {"run_id": run_id}).one()
    return {"duplicate_keys": by_key, "duplicate_content_hashes": by_hash}


def default_partition_rows(conn: Connection, run_id: int | None = None) -> dict[str, int]:
    """Rows in ``raw_items_default``: undated ones belong there, dated ones wait for their month's partition."""
    undated, dated = conn.execute(text(_DEFAULT_PARTITION_ROWS), {"run_id": run_id}).one()
    return {"undated_items": undated, "dated_items_waiting_for_a_partition": dated}


def unbalanced_runs(conn: Connection, run_id: int | None = None) -> tuple[int, dict[str, dict[str, int]]]:
    """(ingested runs checked, those whose delivered rows differ from loaded + duplicates + rejected)."""
    rows = conn.execute(text(_ACCOUNTING), {"run_id": run_id}).all()
    unbalanced = {
        str(r.id): {"delivered": r.items_collected, "accounted": r.accounted}
        for r in rows
        if r.items_collected != r.accounted
    }
    return len(rows), unbalanced


def item_count(conn: Connection) -> int:
    """How many items the archive holds."""
    return conn.execute(text("SELECT count(*) FROM raw_items")).scalar_one()


def rejects_by_reason(conn: Connection) -> list[tuple[str, int]]:
    """(reason, rejected rows) for every reason a row was rejected, the most frequent first."""
    rows = conn.execute(text("SELECT reason, count(*) FROM rejected_items GROUP BY reason ORDER BY 2 DESC")).all()
    return [(reason, count) for reason, count in rows]
