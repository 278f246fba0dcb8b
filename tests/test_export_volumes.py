"""Daily volume statistics as an export: the ``volume_stats`` rows of a design, as CSV (read back with the
csv module) and Parquet (pyarrow), compared with the table and with counts worked out by hand from three
items on a cold start; the date range selects the days the content export's range overlaps; an empty range
gives files with their header and schema; a request's items and volumes are separate files."""

from __future__ import annotations

import csv
import io
import json
from datetime import date

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import text

from observatory_assets.defs.actors.analysis import compute_volume_stats
from observatory_assets.defs.exports.delivery import export_content, export_volumes
from observatory_assets.defs.exports.filters import ExportFilterError, build_filters
from observatory_assets.defs.exports.volumes import VOLUME_COLUMNS, volume_schema
from observatory_assets.defs.ingestion.collect import SourceRequest, collect
from observatory_assets.defs.ingestion.loading import ingest_collection_run
from tests.support.cli import invoke, one_line_error
from tests.support.helpers import write

THREE = [
    {"id": "a", "title": "Klima", "text": "a", "language": "da", "published_at": "2026-12-01T10:00:00Z"},
    {"id": "b", "title": "Climate", "text": "b", "language": "en", "published_at": "2026-12-01T23:59:00Z"},
    {"id": "c", "title": "Energi", "text": "c", "language": "da", "published_at": "2026-12-02T00:30:00Z"},
]
TERMS = {"a": ["klima"], "b": ["=cmd"], "c": ["klima", "energi"]}  # '=cmd': a term a spreadsheet would run


@pytest.fixture
def volumes(engine, store, tmp_path) -> None:
    """Three items of the design 'watch', their matched terms, and volume_stats computed for their days."""
    with engine.begin() as conn:
        design = conn.execute(text("INSERT INTO query_designs (name) VALUES ('watch') RETURNING id")).scalar_one()
        conn.execute(text("INSERT INTO query_designs (name) VALUES ('other')"))
    path = write(tmp_path / "three.jsonl", "\n".join(json.dumps(item) for item in THREE))
    run = collect(engine, store, [SourceRequest("posts", "jsonl", path=str(path))], query_design_id=design)
    ingest_collection_run(engine, store, run)
    with engine.begin() as conn:
        for external_id, terms in TERMS.items():
            conn.execute(
                text("UPDATE raw_items SET search_terms_matched = :t WHERE external_id = :e"),
                {"t": terms, "e": external_id},
            )
        compute_volume_stats(conn, date(2026, 12, 1), date(2026, 12, 2))


def _read(store, result) -> bytes:
    with store.open(result.object_key) as stream:
        return stream.read()


def _csv_rows(data: bytes) -> list[dict]:
    assert data.startswith(b"\xef\xbb\xbf")
    return list(csv.DictReader(io.StringIO(data.decode("utf-8-sig"), newline="")))


def test_a_cold_start_of_three_items_exports_the_counts_worked_out_by_hand(engine, store, volumes):
    results = {r.format: r for r in export_volumes(engine, store, build_filters(query_designs=["watch"]),
                                                   request_id="three")}  # fmt: skip
    assert set(results) == {"csv", "parquet"} and results["csv"].object_key == "exports/three/volumes.csv"
    rows = _csv_rows(_read(store, results["csv"]))
    assert list(rows[0]) == [c.name for c in VOLUME_COLUMNS]
    got = {(r["day"], r["dimension"], r["value"]): int(r["items"]) for r in rows}
    assert {r["query_design"] for r in rows} == {"watch"}
    by_hand = {
        ("2026-12-01", "language", "da"): 1, ("2026-12-01", "language", "en"): 1, ("2026-12-02", "language", "da"): 1,
        ("2026-12-01", "source", "posts"): 2, ("2026-12-02", "source", "posts"): 1,
        ("2026-12-01", "term", "klima"): 1, ("2026-12-01", "term", "'=cmd"): 1,
        ("2026-12-02", "term", "klima"): 1, ("2026-12-02", "term", "energi"): 1,
    }  # fmt: skip
    assert {key: got[key] for key in by_hand} == by_hand
    assert results["csv"].record_count == len(rows) == results["parquet"].record_count

    with engine.connect() as conn:
        table_rows = conn.execute(
            text("""SELECT v.day, qd.name, v.dimension, v.value, v.items FROM volume_stats v
                    JOIN query_designs qd ON qd.id = v.query_design_id WHERE qd.name = 'watch'
                    ORDER BY v.day, qd.name, v.dimension, v.items DESC, v.value""")
        ).all()
    parquet = pq.read_table(io.BytesIO(_read(store, results["parquet"])))
    assert parquet.schema.equals(volume_schema()) and parquet.schema.field("day").type == pa.date32()
    assert [tuple(r.values()) for r in parquet.to_pylist()] == [tuple(r) for r in table_rows]  # '=cmd' unchanged
    assert [(r["day"], r["dimension"], r["value"]) for r in rows] == [
        (str(r.day), r.dimension, "'" + r.value if r.value.startswith("=") else r.value) for r in table_rows
    ]


def test_the_date_range_selects_the_days_it_overlaps(engine, store, volumes):
    cases = {
        ("2026-12-02", None): {"2026-12-02"},
        (None, "2026-12-02"): {"2026-12-01"},  # exclusive, as for items
        (None, "2026-12-02T06:00:00+00:00"): {"2026-12-01", "2026-12-02"},  # the range reaches into the 2nd
        ("2026-12-01T23:00:00Z", "2026-12-01T23:30:00Z"): {"2026-12-01"},
    }
    for number, ((since, until), days) in enumerate(cases.items()):
        filters = build_filters(query_designs=["watch"], published_from=since, published_to=until)
        [result] = export_volumes(engine, store, filters, ["csv"], request_id=f"range-{number}")
        assert {r["day"] for r in _csv_rows(_read(store, result))} == days, (since, until)


def test_an_empty_range_gives_a_header_and_a_schema(engine, store, volumes):
    filters = build_filters(query_designs=["watch", "other"], published_from="1999-01-01", published_to="1999-02-01")
    results = {r.format: r for r in export_volumes(engine, store, filters, request_id="empty")}
    assert {r.record_count for r in results.values()} == {0}
    assert list(csv.reader(io.StringIO(_read(store, results["csv"]).decode("utf-8-sig")))) == [
        [c.name for c in VOLUME_COLUMNS]
    ]
    table = pq.read_table(io.BytesIO(_read(store, results["parquet"])))
    assert table.num_rows == 0 and table.schema.equals(volume_schema())
    [other] = export_volumes(engine, store, build_filters(query_designs=["other"]), ["parquet"], request_id="other")
    assert other.record_count == 0  # a design without items


def test_items_and_volumes_of_one_request_are_separate_files_and_a_retry_replaces_them(engine, store, volumes):
    every_design = build_filters(query_designs=["watch"])
    export_content(engine, store, every_design, ["csv"], request_id="run-1")
    export_volumes(engine, store, every_design, ["csv"], request_id="run-1")
    export_volumes(engine, store, every_design, ["csv"], request_id="run-1")
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT kind, format, status, object_key FROM exports ORDER BY kind")).all()
    assert [tuple(r) for r in rows] == [("items", "csv", "completed", "exports/run-1/items.csv"),
                                        ("volumes", "csv", "completed", "exports/run-1/volumes.csv")]  # fmt: skip


def test_volume_exports_refuse_what_they_cannot_select_before_any_work(engine, store, volumes):
    for filters, message in (
        (build_filters(), "at least one query design"),
        (build_filters(query_designs=["watch"], sources=["posts"]), "not by sources"),
        (build_filters(query_designs=["nope"]), "unknown query design: nope"),
    ):
        with pytest.raises(ExportFilterError, match=message):
            export_volumes(engine, store, filters)
    with pytest.raises(ExportFilterError, match="formats must be among csv, parquet"):
        export_volumes(engine, store, build_filters(query_designs=["watch"]), ["xlsx"])
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM exports")).scalar() == 0


def test_the_command_prints_one_line_per_file_and_a_mistake_in_one_line(volumes, dagster_env):
    done = invoke("export", "volumes", "--query-design", "watch", "--from", "2026-12-02", env=dagster_env)
    assert done.exit_code == 0, done.output
    printed = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(p["format"], p["records"]) for p in printed] == [
        ("csv", 7),
        ("parquet", 7),
    ]  # one day: 5 dimensions, 2 terms
    assert "need at least one query design" in one_line_error(invoke("export", "volumes", env=dagster_env))
