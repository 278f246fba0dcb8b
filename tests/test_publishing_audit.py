"""The audit trail: one function writes every row; rows past the retention are archived to Parquet,
verified, then deleted."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta

import pyarrow.parquet as pq
from sqlalchemy import text

from observatory_assets.defs.publishing.audit import archive_audit_log, audit_rows
from observatory_assets.lib.audit import record_audit


def test_old_audit_rows_are_archived_verified_and_deleted(engine, store) -> None:
    now = datetime(2026, 6, 1, tzinfo=UTC)
    with engine.begin() as conn:
        for n in range(5):
            row = record_audit(conn, "test", "publish", "publish_record", n, target="static", details={"n": n})
            age = timedelta(days=400 + n) if n < 3 else timedelta(days=10)
            conn.execute(text("UPDATE audit_log SET at = :at WHERE id = :id"), {"at": now - age, "id": row})
    archive = archive_audit_log(engine, store, retention_days=365, now=now)
    assert archive is not None and archive.rows == 3
    with store.open(archive.key) as stream:
        table = pq.read_table(io.BytesIO(stream.read()))
    assert [json.loads(d)["n"] for d in table.column("details").to_pylist()] == [0, 1, 2]
    assert table.column("target").to_pylist() == ["static"] * 3
    with store.open(archive.manifest_key) as stream:
        assert json.load(stream)["rows"] == 3
    remaining = audit_rows(engine)
    assert sorted(r["details"]["n"] for r in remaining) == [3, 4]
    assert archive_audit_log(engine, store, retention_days=365, now=now) is None  # nothing old left
    assert archive_audit_log(engine, store, retention_days=0, now=now + timedelta(days=9999)) is None  # 0 keeps all


def test_a_young_row_between_old_ones_is_kept(engine, store) -> None:
    now = datetime(2026, 6, 1, tzinfo=UTC)
    with engine.begin() as conn:
        ages = [500, 10, 500]  # ids 1..3: the middle one is young
        for n, days in enumerate(ages):
            row = record_audit(conn, "test", "export", "exports", n)
            conn.execute(
                text("UPDATE audit_log SET at = :at WHERE id = :id"), {"at": now - timedelta(days=days), "id": row}
            )
    archive = archive_audit_log(engine, store, retention_days=365, now=now)
    assert archive.rows == 1
    assert sorted(r["object_id"] for r in audit_rows(engine)) == ["1", "2"]
