"""Partition rollover and retention against the real embedded PostgreSQL and a real S3 endpoint:
months are created exactly once, DEFAULT is emptied without losing a row, and nothing is
dropped before its Parquet archive has been read back and verified."""

import json
import uuid
from datetime import UTC, date, datetime

import dagster as dg
import psycopg
import pyarrow.parquet as pq
import pytest
from sqlalchemy import text

from observatory_assets.defs.ingestion.collect import SourceRequest, collect
from observatory_assets.defs.ingestion.loading import ingest_collection_run
from observatory_assets.defs.operations.assets import default_partitions_empty, monthly_partitions, months_ready_ahead
from observatory_assets.defs.operations.jobs import partition_rollover_schedule
from observatory_assets.defs.operations.retention import (
    ArchiveVerificationError,
    PartitionChangedError,
    apply_retention,
    archive_month,
    drop_archived_month,
    retention_from_env,
    verify_archive,
)
from observatory_assets.defs.operations.rollover import (
    PARTITIONED_TABLES,
    add_months,
    month_partitions,
    month_start,
    partition_health,
    roll_over,
)
from observatory_assets.lib.sql import month_partition_name
from resources import ObjectStoreResource
from resources.settings import as_libpq_dsn
from tests.support.helpers import write

FUTURE = date(2031, 6, 10)  # far from the months the migration creates around the real today


def _partitions(engine, table: str) -> set[str]:
    with engine.connect() as conn:
        return set(month_partitions(conn, table).values())


def _seed_items(engine, rows: list[tuple[str, str | None]]) -> None:
    """raw_items rows (external_id, published_at) straight into the table, as a late writer would."""
    with engine.begin() as conn:
        source = conn.execute(text("INSERT INTO sources (name, type) VALUES ('wire', 'jsonl') RETURNING id")).scalar()
        run = conn.execute(text("INSERT INTO collection_runs (status) VALUES ('completed') RETURNING id")).scalar()
        for n, (external_id, published) in enumerate(rows):
            conn.execute(
                text(
                    "INSERT INTO raw_items (id, source_id, collection_run_id, record_no, external_id, title, "
                    "published_at, fetched_at, content_hash, search_terms_matched, raw_metadata) VALUES "
                    "(:id, :s, :r, :n, :e, :title, CAST(:p AS timestamptz), now(), :h, ARRAY['a','b'], "
                    "CAST(:meta AS jsonb))"
                ),
                {"id": 1000 + n, "s": source, "r": run, "n": n, "e": external_id, "title": f"Title {n} æøå",
                 "p": published, "h": external_id.encode(), "meta": json.dumps({"n": n})},
            )  # fmt: skip


def _seed_snapshots(engine, days: list[str]) -> None:
    with engine.begin() as conn:
        trend = conn.execute(text("INSERT INTO trends (name) VALUES ('t') RETURNING id")).scalar()
        for n, day in enumerate(days):
            conn.execute(
                text("INSERT INTO trend_snapshots (trend_id, snapshot_date, log_odds, probability) "
                     "VALUES (:t, CAST(:d AS date), :lo, 0.5)"),
                {"t": trend, "d": day, "lo": n / 3},
            )  # fmt: skip


def _rows(engine, table: str) -> list[tuple]:
    with engine.connect() as conn:
        return sorted(map(tuple, conn.execute(text(f"SELECT * FROM {table}")).all()), key=repr)


def test_rollover_creates_exactly_the_missing_months_with_indexes_and_is_idempotent(engine):
    before = {t: _partitions(engine, t) for t in PARTITIONED_TABLES}
    result = roll_over(engine, months_ahead=3, today=FUTURE)
    expected = {f"{t}_2031_{m:02d}" for t in PARTITIONED_TABLES for m in (6, 7, 8, 9)}
    assert set(result.created) == expected and not result.moved_rows and not result.busy
    for table in PARTITIONED_TABLES:
        assert _partitions(engine, table) == before[table] | {n for n in expected if n.startswith(table)}
    with engine.connect() as conn:
        index_counts = dict(
            conn.execute(
                text(
                    "SELECT c.relname, count(i.indexrelid) FROM pg_class c LEFT JOIN pg_index i ON i.indrelid = c.oid "
                    "WHERE c.relname IN ('raw_items', 'raw_items_2031_07', 'trend_snapshots', 'trend_snapshots_2031_07') "
                    "GROUP BY 1"
                )
            ).all()
        )
    assert index_counts["raw_items_2031_07"] == index_counts["raw_items"] >= 8
    assert index_counts["trend_snapshots_2031_07"] == index_counts["trend_snapshots"] >= 1

    again = roll_over(engine, months_ahead=3, today=FUTURE)
    assert again.created == [] and again.moved_rows == {}
    health = partition_health(engine, "raw_items", 3, today=FUTURE)
    assert health.missing_months == [] and health.months_ready_ahead == 3


def test_rows_in_default_move_to_their_month_with_counts_unchanged(engine):
    _seed_items(engine, [
        ("a", "2020-03-15T10:00:00Z"), ("b", "2020-03-01T00:00:00Z"),
        ("c", "2020-03-31T23:30:00-02:00"),  # 2020-04-01 01:30 UTC: April
        ("d", None),
    ])  # fmt: skip
    _seed_snapshots(engine, ["2019-12-01", "2019-12-31", "2020-01-01"])
    items_before, snapshots_before = _rows(engine, "raw_items"), _rows(engine, "trend_snapshots")
    assert partition_health(engine, "raw_items").default_dated_rows == 3

    result = roll_over(engine, months_ahead=0)
    assert result.moved_rows == {
        "raw_items_2020_03": 2, "raw_items_2020_04": 1, "trend_snapshots_2019_12": 2, "trend_snapshots_2020_01": 1,
    }  # fmt: skip
    assert _rows(engine, "raw_items") == items_before and _rows(engine, "trend_snapshots") == snapshots_before
    with engine.connect() as conn:
        where = dict(conn.execute(text("SELECT external_id, tableoid::regclass::text FROM raw_items")).all())
    assert where == {
        "a": "raw_items_2020_03",
        "b": "raw_items_2020_03",
        "c": "raw_items_2020_04",
        "d": "raw_items_default",
    }
    for table in PARTITIONED_TABLES:
        health = partition_health(engine, table, 0)
        assert health.default_dated_rows == 0 and health.missing_months == []
    assert roll_over(engine, months_ahead=0).created == []


def test_archive_then_drop_reads_back_the_same_rows_before_the_partition_goes(engine, store):
    _seed_items(engine, [(f"x{n}", f"2020-05-{n % 28 + 1:02d}T12:00:00Z") for n in range(50)] + [("y", "2031-01-02")])
    _seed_snapshots(engine, ["2020-05-03", "2020-05-04"])
    roll_over(engine, months_ahead=0)
    may = _rows(engine, "raw_items_2020_05")

    result = apply_retention(engine, store, {"raw_items": 12, "trend_snapshots": 12}, today=date(2021, 6, 1))
    assert result.kept == {}
    archived = {a.partition: a for a in result.archived}
    assert set(archived) == {"raw_items_2020_05", "trend_snapshots_2020_05"} and all(a.dropped for a in result.archived)
    items = archived["raw_items_2020_05"]
    assert items.key == "archive/raw_items/2020-05.parquet" and items.rows == 50
    assert "raw_items_2020_05" not in _partitions(engine, "raw_items")
    assert "raw_items_2031_01" in _partitions(engine, "raw_items")

    with store.open(items.manifest_key) as stream:
        manifest = json.load(stream)
    assert manifest["rows"] == 50 and manifest["dropped_at"] and manifest["sha256"] == items.sha256
    verify_archive(store, manifest)
    table = pq.read_table(store.download_url(items.key))
    assert table.num_rows == 50
    assert sorted(table.column("external_id").to_pylist()) == sorted(r[4] for r in may)
    assert table.schema.field("published_at").type.tz == "UTC"
    assert sorted(table.column("title").to_pylist()) == sorted(r[6] for r in may)

    again = apply_retention(engine, store, {"raw_items": 12, "trend_snapshots": 12}, today=date(2021, 6, 1))
    assert again.archived == [] and again.kept == {}


def test_a_corrupted_archive_fails_verification(engine, store):
    _seed_items(engine, [(f"x{n}", "2020-05-05T00:00:00Z") for n in range(5)])
    roll_over(engine, months_ahead=0)
    archive = archive_month(engine, store, "raw_items", date(2020, 5, 1))
    with store.open(archive.manifest_key) as stream:
        manifest = json.load(stream)
    path = store.root / archive.key
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ArchiveVerificationError, match="SHA-256"):
        verify_archive(store, manifest)


def test_a_partition_that_changed_after_archiving_is_kept(engine, store):
    _seed_items(engine, [(f"x{n}", "2020-05-05T00:00:00Z") for n in range(5)])
    roll_over(engine, months_ahead=0)
    archive = archive_month(engine, store, "raw_items", date(2020, 5, 1))
    assert archive_month(engine, store, "raw_items", date(2020, 5, 1)).reused
    with engine.begin() as conn:
        conn.execute(text("UPDATE raw_items SET title = 'edited' WHERE external_id = 'x1'"))
    with pytest.raises(PartitionChangedError):
        drop_archived_month(engine, archive)
    assert "raw_items_2020_05" in _partitions(engine, "raw_items")
    fresh = archive_month(engine, store, "raw_items", date(2020, 5, 1))
    assert not fresh.reused and fresh.key == "archive/raw_items/2020-05.1.parquet"
    drop_archived_month(engine, fresh)
    assert "raw_items_2020_05" not in _partitions(engine, "raw_items")


def _s3_store(s3_server):
    bucket = f"ops-{uuid.uuid4().hex[:12]}"  # the session's server keeps every bucket until it ends
    return ObjectStoreResource(endpoint=s3_server.endpoint, access_key=s3_server.access_key,
                               secret_key=s3_server.secret_key, bucket=bucket).get_store()  # fmt: skip


def test_a_failed_upload_leaves_the_partition_in_place(engine, s3_server):
    store = _s3_store(s3_server)
    _seed_items(engine, [(f"x{n}", "2020-05-05T00:00:00Z") for n in range(5)])
    roll_over(engine, months_ahead=0)
    before = _rows(engine, "raw_items")
    s3_server.stop()
    result = apply_retention(engine, store, {"raw_items": 1}, today=date(2021, 1, 1))
    assert list(result.kept) == ["raw_items_2020_05"] and result.archived == []
    assert "raw_items_2020_05" in _partitions(engine, "raw_items") and _rows(engine, "raw_items") == before
    s3_server.start()  # the server back, the next run archives and drops the month
    result = apply_retention(engine, store, {"raw_items": 1}, today=date(2021, 1, 1))
    assert result.kept == {} and [a.rows for a in result.archived] == [5]
    assert "raw_items_2020_05" not in _partitions(engine, "raw_items")


def test_archive_and_drop_on_s3(engine, s3_server):
    store = _s3_store(s3_server)
    _seed_items(engine, [(f"x{n}", "2020-05-05T00:00:00Z") for n in range(20)])
    roll_over(engine, months_ahead=0)
    result = apply_retention(engine, store, {"raw_items": 1}, today=date(2021, 1, 1))
    assert result.kept == {} and [a.rows for a in result.archived] == [20]
    assert set(store.list("archive/raw_items/")) == {
        "archive/raw_items/2020-05.parquet",
        "archive/raw_items/2020-05.manifest.json",
    }


def test_old_collection_run_payloads_are_archived_verified_then_deleted(engine, store, tmp_path):
    path = write(
        tmp_path / "feed.jsonl", '{"id": "1", "title": "One", "text": "a", "published_at": "2026-01-02"}\nnot json\n'
    )
    run_id = collect(engine, store, [SourceRequest("feed", "jsonl", path=str(path))])
    ingest_collection_run(engine, store, run_id)
    original = next(store.list(f"collection_runs/{run_id}/"))
    with engine.begin() as conn:
        conn.execute(text("UPDATE collection_runs SET completed_at = '2020-01-01' WHERE id = :id"), {"id": run_id})

    assert apply_retention(engine, store, {"collection_payloads": 24}, today=date(2021, 12, 1)).payload_runs == []
    result = apply_retention(engine, store, {"collection_payloads": 12}, today=date(2021, 12, 1))
    assert [p.run_id for p in result.payload_runs] == [run_id] and result.kept == {}
    assert store.size(original) is None and store.size(f"archive/{original}") is not None
    with store.open(f"archive/collection_runs/{run_id}.manifest.json") as stream:
        manifest = json.load(stream)
    assert manifest["payloads"][0]["key"] == original
    with engine.connect() as conn:  # the quarantined row points at the payload's archived copy
        assert conn.execute(text("SELECT payload_key FROM rejected_items")).scalars().all() == [f"archive/{original}"]
    assert apply_retention(engine, store, {"collection_payloads": 12}, today=date(2021, 12, 1)).payload_runs == []


def test_unknown_retention_keys_are_refused(engine, store):
    with pytest.raises(ValueError, match="unknown retention"):
        apply_retention(engine, store, {"raw_itemz": 3})


def test_the_job_reports_what_it_did_and_its_checks_flag_problems(engine, resources):
    _seed_items(engine, [("a", "2019-02-02T00:00:00Z")])
    with dg.DagsterInstance.ephemeral() as instance:
        check_defs = [months_ready_ahead, default_partitions_empty]
        # Before the rollover a dated row waits in DEFAULT.
        failing = dg.materialize(
            check_defs, instance=instance, resources=resources, selection=dg.AssetSelection.checks(*check_defs)
        )
        assert failing.success
        evaluations = {e.check_name: e for e in failing.get_asset_check_evaluations()}
        assert not evaluations["default_partitions_empty"].passed

        result = dg.materialize(
            [monthly_partitions, *check_defs],
            instance=instance,
            resources=resources,
            run_config={"ops": {"monthly_partitions": {"config": {"months_ahead": 5}}}},
        )
        metadata = result.asset_materializations_for_node("monthly_partitions")[0].metadata
        assert metadata["rows_moved_from_default"].value == {"raw_items_2019_02": 1}
        assert metadata["months_ahead"].value == 5
        evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
        assert evaluations["months_ready_ahead"].passed and evaluations["default_partitions_empty"].passed
        assert evaluations["months_ready_ahead"].metadata["months_ahead_required"].value == 5

        last = month_partition_name("trend_snapshots", add_months(month_start(datetime.now(UTC).date()), 5))
        with engine.begin() as conn:
            conn.execute(text(f"DROP TABLE {last}"))
        again = dg.materialize(check_defs, instance=instance, resources=resources,
                               selection=dg.AssetSelection.checks(*check_defs))  # fmt: skip
        evaluation = next(e for e in again.get_asset_check_evaluations() if e.check_name == "months_ready_ahead")
        assert not evaluation.passed
        assert evaluation.metadata["missing_months"].value == {"trend_snapshots": [f"{last[-7:-3]}-{last[-2:]}"]}


def test_retention_comes_from_the_environment_and_run_config_overrides_it(engine, resources, monkeypatch):
    _seed_items(engine, [("old", "2019-02-02T00:00:00Z")])
    roll_over(engine, months_ahead=0)
    monkeypatch.setenv("OBSERVATORY_RETENTION_RAW_ITEMS_MONTHS", "1200")  # a century: nothing expires
    monkeypatch.setenv("OBSERVATORY_RETENTION_COLLECTION_PAYLOADS_MONTHS", "0")
    assert retention_from_env() == {"raw_items": 1200}
    with dg.DagsterInstance.ephemeral() as instance:
        kept = dg.materialize([monthly_partitions], instance=instance, resources=resources)
        metadata = kept.asset_materializations_for_node("monthly_partitions")[0].metadata
        assert metadata["retention_months"].value == {"raw_items": 1200} and metadata["archived"].value == []
        monkeypatch.setenv("OBSERVATORY_RETENTION_RAW_ITEMS_MONTHS", "24")
        dropped = dg.materialize([monthly_partitions], instance=instance, resources=resources)
        archived = dropped.asset_materializations_for_node("monthly_partitions")[0].metadata["archived"].value
        assert [a["partition"] for a in archived] == ["raw_items_2019_02"]
        overridden = dg.materialize([monthly_partitions], instance=instance, resources=resources, run_config={
            "ops": {"monthly_partitions": {"config": {"retention_months": {"raw_items": 0}}}}})  # fmt: skip
        assert overridden.asset_materializations_for_node("monthly_partitions")[0].metadata[
            "retention_months"
        ].value == {"raw_items": 0}
    monkeypatch.setenv("OBSERVATORY_RETENTION_TREND_SNAPSHOTS_MONTHS", "a year")
    with pytest.raises(
        ValueError, match="OBSERVATORY_RETENTION_TREND_SNAPSHOTS_MONTHS: input should be a valid integer"
    ):
        retention_from_env()


def test_the_daily_schedule_requests_one_rollover_run():
    with dg.DagsterInstance.ephemeral() as instance:
        tick = datetime(2026, 11, 21, 0, 15, tzinfo=UTC)
        context = dg.build_schedule_context(instance=instance, scheduled_execution_time=tick)
        data = partition_rollover_schedule.evaluate_tick(context)
    assert len(data.run_requests) == 1
    assert data.run_requests[0].job_name in (None, "partition_rollover")


def test_a_month_that_cannot_be_locked_in_time_is_reported_busy_not_waited_for(engine, database_url):
    reader = psycopg.connect(as_libpq_dsn(database_url))
    try:
        reader.execute("SELECT count(*) FROM raw_items")  # an open transaction, as a long ingestion would hold
        result = roll_over(engine, months_ahead=1, today=FUTURE, tables=["raw_items"], lock_timeout_s=0.2)
    finally:
        reader.close()
    assert result.busy == ["raw_items_2031_06", "raw_items_2031_07"] and result.created == []
    assert roll_over(engine, months_ahead=1, today=FUTURE, tables=["raw_items"]).created == result.busy
