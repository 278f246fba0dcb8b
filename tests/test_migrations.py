"""Alembic owns the schema: up and down on an empty and on a populated database."""

from datetime import UTC, datetime

from sqlalchemy import inspect, text

from observatory_assets.defs.ingestion.collect import SourceRequest, collect
from observatory_assets.defs.ingestion.loading import ingest_collection_run
from observatory_assets.lib import migrations
from resources.postgres import engine_for
from tests.support.helpers import write

TABLES = {
    "sources", "query_designs", "collection_runs", "item_keys", "raw_items", "item_duplicates", "rejected_items",
    "item_embeddings", "events", "event_items", "trends", "trend_evidence", "trend_snapshots", "publish_records",
    "takedown_requests", "audit_log", "exports", "backups",
}  # fmt: skip


def _tables(url: str) -> set[str]:
    engine = engine_for(url)
    with engine.connect() as conn:
        return set(inspect(conn).get_table_names()) - {"alembic_version"}


def _partitions(url: str, parent: str) -> list[str]:
    with engine_for(url).connect() as conn:
        return list(
            conn.execute(
                text(
                    "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                    "WHERE i.inhparent = CAST(:p AS regclass) ORDER BY 1"
                ),
                {"p": parent},
            ).scalars()
        )


def test_upgrade_and_downgrade_on_an_empty_database(empty_database_url):
    migrations.upgrade(empty_database_url)
    assert TABLES <= _tables(empty_database_url)
    month = datetime.now(UTC).strftime("%Y_%m")
    for parent in ("raw_items", "trend_snapshots"):
        parts = _partitions(empty_database_url, parent)
        assert f"{parent}_default" in parts and f"{parent}_{month}" in parts
        assert len(parts) == 6  # previous month, this month, three ahead, DEFAULT
    with engine_for(empty_database_url).connect() as conn:
        assert conn.execute(text("SELECT extversion FROM pg_extension WHERE extname = 'vector'")).scalar()
        indexes = set(conn.execute(text("SELECT indexname FROM pg_indexes WHERE tablename = 'raw_items'")).scalars())
    assert {"raw_items_terms", "raw_items_metadata", "raw_items_search", "raw_items_run"} <= indexes
    migrations.downgrade(empty_database_url)
    assert _tables(empty_database_url) == set()
    migrations.upgrade(empty_database_url)
    assert TABLES <= _tables(empty_database_url)


def test_downgrade_and_upgrade_on_a_populated_database(database_url, store, tmp_path):
    engine = engine_for(database_url)
    payload = write(
        tmp_path / "items.jsonl",
        '{"id": "1", "title": "A", "published_at": "2024-02-03T10:00:00Z"}\n{"id": "2", "title": "B"}\n',
    )
    run_id = collect(engine, store, [SourceRequest("s", "jsonl", path=str(payload))])
    assert ingest_collection_run(engine, store, run_id).loaded == 2
    assert "raw_items_2024_02" in _partitions(database_url, "raw_items")  # created on demand
    migrations.downgrade(database_url)
    assert _tables(database_url) == set()
    migrations.upgrade(database_url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM raw_items")).scalar() == 0


def test_new_month_partition_takes_its_rows_out_of_default(engine):
    with engine.begin() as conn:
        source = conn.execute(text("INSERT INTO sources (name, type) VALUES ('s', 'rss') RETURNING id")).scalar()
        run = conn.execute(text("INSERT INTO collection_runs (status) VALUES ('completed') RETURNING id")).scalar()
        conn.execute(
            text(
                "INSERT INTO raw_items (id, source_id, collection_run_id, record_no, external_id, published_at, "
                "fetched_at, content_hash) VALUES (1, :s, :r, 1, 'x', '2019-05-31 23:30:00+00', now(), '\\x00'), "
                "(2, :s, :r, 2, 'y', '2019-06-01 00:30:00+00', now(), '\\x01')"
            ),
            {"s": source, "r": run},
        )
    with engine.begin() as conn:
        assert conn.execute(text("SELECT ensure_month_partition('raw_items', DATE '2019-05-01')")).scalar()
        assert not conn.execute(text("SELECT ensure_month_partition('raw_items', DATE '2019-05-01')")).scalar()
        where = dict(conn.execute(text("SELECT external_id, tableoid::regclass::text FROM raw_items")).all())
    assert where == {"x": "raw_items_2019_05", "y": "raw_items_default"}


def test_platform_columns_are_backfilled_and_downgrade_keeps_the_rows(database_url, store, tmp_path):
    """0018: the loader fills platform, content type, handle and counts; taken down to 0017 and back up,
    the backfill finds the same values in raw_metadata and the sources (the run's design keeps its authors
    in clear, so 0020 leaves the handle where it is)."""
    engine = engine_for(database_url)
    with engine.begin() as conn:
        design = conn.execute(
            text("""INSERT INTO query_designs (name, arenas) VALUES ('clear', '{"authors": "clear"}') RETURNING id""")
        ).scalar_one()
    payload = write(
        tmp_path / "posts.jsonl",
        '{"id": "1", "text": "A post", "platform": "TikTok", "handle": "@ann", "stats": {"playCount": 99},'
        ' "likes": "12", "num_comments": 3, "published_at": "2024-02-03T10:00:00Z"}\n'
        '{"id": "2", "title": "A headline", "likes": -4, "comments": ["not", "a count"]}\n',
    )
    run_id = collect(engine, store, [SourceRequest("s", "jsonl", path=str(payload))], query_design_id=design)
    assert ingest_collection_run(engine, store, run_id).loaded == 2
    query = text(
        "SELECT external_id, platform, arena, content_type, author_handle, views, likes, shares, comments "
        "FROM raw_items ORDER BY external_id"
    )
    expected = [("1", "tiktok", "jsonl", "post", "@ann", 99, 12, None, 3), ("2", "jsonl", "jsonl", "post", *[None] * 5)]
    with engine.connect() as conn:
        assert [tuple(row) for row in conn.execute(query)] == expected
    migrations.downgrade(database_url, "0017")
    with engine.connect() as conn:
        columns = {c["name"] for c in inspect(conn).get_columns("raw_items")}
        assert not {"platform", "likes"} & columns
        assert conn.execute(text("SELECT count(*) FROM raw_items")).scalar() == 2
    migrations.upgrade(database_url)
    with engine.connect() as conn:
        backfilled = [tuple(row) for row in conn.execute(query)]
        indexes = set(conn.execute(text("SELECT indexname FROM pg_indexes WHERE tablename = 'raw_items'")).scalars())
    assert backfilled == expected
    assert {"raw_items_platform", "raw_items_arena"} <= indexes
