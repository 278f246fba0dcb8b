"""Exports read back with independent readers and compared with the database: csv (utf-8-sig),
openpyxl and pandas (XLSX), json per line (NDJSON), pyarrow (Parquet), lxml against the official
GEXF 1.3 schema plus networkx (GEXF); local and S3 (a real SeaweedFS server on loopback) object stores."""

import csv
import hashlib
import io
import itertools
import json
import re
import subprocess
import sys
import urllib.request
import uuid
from datetime import UTC, datetime

import dagster as dg
import networkx as nx
import openpyxl
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from lxml import etree
from sqlalchemy import text

from observatory_assets.defs.actors.analysis import build_actor_network, network_metrics, store_network_metrics
from observatory_assets.defs.exports.assets import content_exports, network_exports
from observatory_assets.defs.exports.columns import (
    COLUMNS,
    TRUNCATION_MARKER,
    XLSX_MAX_CELL_CHARS,
    export_columns,
    parquet_schema,
)
from observatory_assets.defs.exports.delivery import export_content, export_network, object_key
from observatory_assets.defs.exports.filters import ExportFilterError, build_filters
from observatory_assets.defs.exports.network import PSEUDONYM_KEY_VARIABLE, pseudonym, pseudonym_key
from observatory_assets.defs.ingestion.collect import SourceRequest, collect
from observatory_assets.defs.ingestion.demo_data import write_demo_dataset
from observatory_assets.defs.ingestion.loading import ingest_collection_run
from resources import ObjectStoreResource
from tests.support.helpers import ROOT, write
from tests.support.s3 import SERVER_GONE, StoppingUploads

GEXF_XSD = ROOT.parent / "shared" / "schemas" / "gexf-1.3" / "gexf.xsd"
HOSTILE_FIRST_CHARACTERS = ("=", "+", "-", "@")

SPECIAL_ITEMS = [
    {"id": "dk", "title": "Blåbærgrød på Ærø 🎉", "author": "Søren Ærbødig", "language": "da",
     "text": 'Æbler i Øresund 👍🏽, "citat", komma; og\nny linje', "published_at": "2026-11-10T08:00:00Z",
     "likes": 12, "shares": "7", "stats": {"playCount": 99}},
    {"id": "formula", "title": '=HYPERLINK("http://evil.example","click")', "text": "+cmd|' /C calc'!A0",
     "author": "@mallory", "published_at": "2026-11-10T09:00:00Z", "language": "en"},
    {"id": "minus", "title": "-2+3", "text": "@SUM(1,2)", "author": "Mallory", "published_at": "2026-11-10T10:00:00Z",
     "language": "en"},
    {"id": "long", "title": "A very long post", "text": "ø" * 40_000, "author": "Søren Ærbødig",
     "published_at": "2026-11-10T11:00:00Z", "language": "da"},
    {"id": "gone", "title": "Removed after a takedown", "text": "must never be exported", "author": "Mallory",
     "published_at": "2026-11-10T12:00:00Z", "language": "en"},
    {"id": "review", "title": "Takedown cancelled", "text": "still exported", "author": "Mallory",
     "published_at": "2026-11-10T13:00:00Z", "language": "en"},
]  # fmt: skip


def _item_id(conn, external_id: str) -> int:
    return conn.execute(text("SELECT id FROM raw_items WHERE external_id = :e"), {"e": external_id}).scalar_one()


@pytest.fixture
def dataset(engine, store, tmp_path) -> dict:
    """The demo sources through the real collect + ingest path, a query design that keeps its authors in clear
    (the exports are compared with hostile author names), hostile and Danish items, terms as item_features
    would set them, one takedown removed and one cancelled."""
    with engine.begin() as conn:
        design = conn.execute(
            text("""INSERT INTO query_designs (name, arenas) VALUES ('klima', '{"authors": "clear"}') RETURNING id""")
        ).scalar_one()
    runs = []
    for name, fmt, path in write_demo_dataset(tmp_path / "demo", items_per_source=12):
        runs.append(collect(engine, store, [SourceRequest(name, fmt, path=str(path))], query_design_id=design))
    special = write(tmp_path / "special.jsonl", "\n".join(json.dumps(i, ensure_ascii=False) for i in SPECIAL_ITEMS))
    runs.append(collect(engine, store, [SourceRequest("special", "jsonl", path=str(special))], query_design_id=design))
    for run in runs:
        ingest_collection_run(engine, store, run)
    with engine.begin() as conn:
        conn.execute(
            text(
                """
                UPDATE raw_items SET search_terms_matched = CASE id % 3 WHEN 0 THEN ARRAY['klima']
                                                                       WHEN 1 THEN ARRAY['klima', 'energi']
                                                                       ELSE '{}' END
                """
            )
        )
        gone, review = _item_id(conn, "gone"), _item_id(conn, "review")
        conn.execute(
            text(
                "WITH requests AS (INSERT INTO takedown_requests (item_id, requested_by, reason, status) "
                "VALUES (:gone, 'dpo', 'gdpr', 'removed'), (:review, 'dpo', 'gdpr', 'cancelled') RETURNING id, item_id) "
                "INSERT INTO takedown_items (request_id, item_id) SELECT id, item_id FROM requests"
            ),
            {"gone": gone, "review": review},
        )
    return {"runs": runs, "design": design, "gone": gone, "review": review}


EXPECTED = """
SELECT r.id, s.name AS source, r.title, r.text, r.url, r.author, r.published_at, r.language,
       r.collection_run_id, qd.name AS query_design, r.search_terms_matched, r.raw_metadata
  FROM raw_items r JOIN sources s ON s.id = r.source_id
  JOIN collection_runs c ON c.id = r.collection_run_id LEFT JOIN query_designs qd ON qd.id = c.query_design_id
 WHERE r.id NOT IN (SELECT ti.item_id FROM takedown_items ti JOIN takedown_requests t ON t.id = ti.request_id
                     WHERE t.status <> 'cancelled')
 ORDER BY r.published_at NULLS LAST, r.id
"""


def expected_rows(engine) -> list:
    with engine.connect() as conn:
        return conn.execute(text(EXPECTED)).all()


def neutralized(value: str | None) -> str | None:
    return "'" + value if value and value[0] in HOSTILE_FIRST_CHARACTERS else value


def iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ") if value else None


def read_object(store, key: str) -> bytes:
    with store.open(key) as stream:
        return stream.read()


def test_bad_filters_fail_before_any_work(engine, store, dataset):
    for bad in (
        {"published_from": "last tuesday"},
        {"published_from": "2026-11-10", "published_to": "2026-11-01"},
        {"languages": ["Danish!"]},
        {"collection_runs": ["seven"]},
        {"sources": [""]},
    ):
        with pytest.raises(ExportFilterError):
            build_filters(**bad)
    with pytest.raises(ExportFilterError, match="unknown source: no-such-source"):
        export_content(engine, store, build_filters(sources=["no-such-source", "special"]), ["csv"])
    with pytest.raises(ExportFilterError, match="unknown query design"):
        export_content(engine, store, build_filters(query_designs=["nope"]), ["csv"])
    with pytest.raises(ExportFilterError, match="formats"):
        export_content(engine, store, build_filters(), ["docx"])
    with pytest.raises(ExportFilterError, match="OBSERVATORY_PSEUDONYM_KEY"):
        pseudonym_key({})
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM exports")).scalar() == 0
    assert not list(store.list("exports/"))


def test_every_format_reads_back_equal_to_the_database(engine, store, dataset):
    results = {r.format: r for r in export_content(engine, store, build_filters(), request_id="all-formats",
                                                       include_metadata=True)}  # fmt: skip
    rows = expected_rows(engine)
    ids = [r.id for r in rows]
    assert dataset["gone"] not in ids and dataset["review"] in ids
    assert {r.record_count for r in results.values()} == {len(rows)}
    by_id = {r.id: r for r in rows}

    # CSV: BOM, header, RFC 4180 quoting (newlines, quotes, commas survive), formulas neutralized
    data = read_object(store, results["csv"].object_key)
    assert data.startswith(b"\xef\xbb\xbf")
    assert hashlib.sha256(data).hexdigest() == results["csv"].sha256
    records = list(csv.DictReader(io.StringIO(data.decode("utf-8-sig"), newline="")))
    assert [int(r["item_id"]) for r in records] == ids
    for record in records:
        row = by_id[int(record["item_id"])]
        assert record["title"] == (neutralized(row.title) or "")
        assert record["text"] == (neutralized(row.text) or "")
        assert record["author"] == (neutralized(row.author) or "")
        assert record["published_at"] == (iso(row.published_at) or "")
        assert record["search_terms_matched"] == "; ".join(row.search_terms_matched)
        assert json.loads(record["metadata"]) == row.raw_metadata
        assert not any(record[c].startswith(HOSTILE_FIRST_CHARACTERS) for c in ("title", "text", "author"))
    danish = next(r for r in records if r["title"].startswith("Blåbærgrød"))
    assert danish["title"] == "Blåbærgrød på Ærø 🎉" and "\n" in danish["text"] and '"citat"' in danish["text"]
    assert (danish["likes"], danish["shares"], danish["views"], danish["comments"]) == ("12", "7", "99", "")
    assert next(r for r in records if r["title"].startswith("'=HYPERLINK"))["text"] == "'+cmd|' /C calc'!A0"

    # NDJSON: one object per line, ISO 8601 UTC, typed values, text unchanged (no spreadsheet here)
    lines = read_object(store, results["ndjson"].object_key).decode("utf-8").splitlines()
    objects = [json.loads(line) for line in lines]
    assert [o["item_id"] for o in objects] == ids
    for obj in objects:
        row = by_id[obj["item_id"]]
        assert (obj["title"], obj["text"], obj["author"]) == (row.title, row.text, row.author)
        assert obj["published_at"] == iso(row.published_at)
        assert obj["search_terms_matched"] == row.search_terms_matched and obj["metadata"] == row.raw_metadata
        assert obj["collection_run"] == row.collection_run_id and obj["query_design"] == row.query_design
    assert next(o for o in objects if o["author"] == "Søren Ærbødig" and o["likes"])["likes"] == 12

    # Parquet: the explicit schema, values equal
    table = pq.read_table(io.BytesIO(read_object(store, results["parquet"].object_key)))
    assert table.schema.equals(parquet_schema(include_metadata=True))
    assert table.schema.field("published_at").type == pa.timestamp("us", tz="UTC")
    assert table.schema.field("likes").type == pa.int64()
    assert table.schema.field("search_terms_matched").type == pa.list_(pa.string())
    for got in table.to_pylist():
        row = by_id[got["item_id"]]
        assert (got["title"], got["text"], got["url"], got["language"]) == (row.title, row.text, row.url, row.language)
        assert got["published_at"] == row.published_at and got["search_terms_matched"] == row.search_terms_matched
        assert json.loads(got["metadata"]) == row.raw_metadata
    assert table.column("item_id").to_pylist() == ids

    # XLSX: openpyxl for the sheet itself, pandas for the values
    xlsx = read_object(store, results["xlsx"].object_key)
    book = openpyxl.load_workbook(io.BytesIO(xlsx))
    sheet = book["items"]
    assert sheet.freeze_panes == "A2" and all(cell.font.bold for cell in sheet[1])
    assert [c.value for c in sheet[1]] == [c.name for c in export_columns(True)]
    assert sheet.column_dimensions["G"].width == 80
    cells = [cell for row in sheet.iter_rows(min_row=2) for cell in row]
    assert all(c.data_type != "f" for c in cells)  # no formulas anywhere
    frame = pd.read_excel(io.BytesIO(xlsx), sheet_name="items", dtype={"title": str, "text": str})
    assert frame["item_id"].tolist() == ids
    long_text = frame.loc[frame["title"] == "A very long post", "text"].item()
    assert len(long_text) == XLSX_MAX_CELL_CHARS and long_text.endswith(TRUNCATION_MARKER)
    assert frame.loc[frame["title"] == "'-2+3", "text"].item() == "'@SUM(1,2)"
    first = by_id[ids[0]]
    assert frame["published_at"].iloc[0].to_pydatetime() == first.published_at.astimezone(UTC).replace(
        tzinfo=None, microsecond=0
    )


def test_xlsx_rows_beyond_the_sheet_limit_continue_on_a_new_sheet(engine, store, dataset):
    results = export_content(engine, store, build_filters(sources=["special"]), ["xlsx"], max_rows_per_sheet=3)
    book = openpyxl.load_workbook(io.BytesIO(read_object(store, results[0].object_key)), read_only=True)
    assert book.sheetnames == ["items", "items (2)", "items (3)"] and results[0].details == {"sheets": 3}
    ids = []
    for sheet in book.worksheets:
        rows = list(sheet.iter_rows(values_only=True))
        assert rows[0][0] == "item_id" and len(rows) <= 3
        ids += [r[0] for r in rows[1:]]
    assert ids == [r.id for r in expected_rows(engine) if r.source == "special"]


def test_a_filter_matching_nothing_gives_valid_files_with_a_header(engine, store, dataset):
    results = export_content(engine, store, build_filters(published_to="1999-01-01"))
    assert all(r.record_count == 0 for r in results)
    files = {r.format: read_object(store, r.object_key) for r in results}
    header = [c.name for c in COLUMNS]
    assert list(csv.reader(io.StringIO(files["csv"].decode("utf-8-sig")))) == [header]
    assert files["ndjson"] == b""
    table = pq.read_table(io.BytesIO(files["parquet"]))
    assert table.num_rows == 0 and table.schema.equals(parquet_schema(False))
    assert pd.read_excel(io.BytesIO(files["xlsx"])).columns.tolist() == header
    with engine.connect() as conn:
        states = conn.execute(text("SELECT status, record_count FROM exports")).all()
    assert sorted(states) == [("completed", 0)] * 4


def test_filters_select_exactly_the_matching_items(engine, store, dataset):
    rows = expected_rows(engine)
    run = dataset["runs"][0]
    cases = [
        (build_filters(published_from="2026-11-10", published_to="2026-11-10T10:00:00+00:00"),
         lambda r: r.published_at and datetime(2026, 11, 10, tzinfo=UTC) <= r.published_at < datetime(2026, 11, 10, 10, tzinfo=UTC)),
        (build_filters(sources=["special", "bbc-world"]), lambda r: r.source in ("special", "bbc-world")),
        (build_filters(arenas=["atom"]), lambda r: r.source == "politiken"),
        (build_filters(languages=["DA"]), lambda r: r.language == "da"),
        (build_filters(query_designs=["klima"]), lambda r: r.query_design == "klima"),
        (build_filters(collection_runs=[run]), lambda r: r.collection_run_id == run),
        (build_filters(search_terms=["energi"]), lambda r: "energi" in r.search_terms_matched),
        (build_filters(text_query='"Blåbærgrød på Ærø"'), lambda r: r.title == "Blåbærgrød på Ærø 🎉"),
        (build_filters(text_query="takedown"), lambda r: r.title == "Takedown cancelled"),
        (build_filters(sources=["special"], languages=["en"], search_terms=["klima"]),
         lambda r: r.source == "special" and r.language == "en" and "klima" in r.search_terms_matched),
    ]  # fmt: skip
    for number, (filters, wanted) in enumerate(cases):
        expected = [r.id for r in rows if wanted(r)]
        assert expected, f"case {number} selects nothing; the test would prove little"
        result = export_content(engine, store, filters, ["ndjson"], request_id=f"filter-{number}")[0]
        lines = read_object(store, result.object_key).decode().splitlines()
        assert [json.loads(line)["item_id"] for line in lines] == expected, f"case {number}: {filters}"


def _gexf(store, result) -> tuple[bytes, nx.Graph]:
    data = read_object(store, result.object_key)
    schema = etree.XMLSchema(etree.parse(str(GEXF_XSD)))
    document = etree.fromstring(data)
    assert schema.validate(document), schema.error_log
    return data, nx.read_gexf(io.BytesIO(data), version="1.3")


def assert_network_metrics(engine, graph: nx.Graph, node_of: dict[str, str]) -> None:
    """Each exported node (``node_of``: author → node id) carries the metrics ``actor_network`` stored for the
    author's most frequent pseudonym, typed as declared; at least one node has a community beyond a lone one."""
    with engine.connect() as conn:
        stored = {row.node: row for row in conn.execute(text("SELECT * FROM actor_network_nodes"))}
        pseudonyms = conn.execute(
            text("SELECT author, author_pseudonym, count(*) AS n FROM raw_items WHERE author IS NOT NULL GROUP BY 1, 2")
        ).all()
    assert any(row.degree for row in stored.values()), "the archive network has no edges; the test proves little"
    frequent: dict[str, dict[str, int]] = {}
    for author, pseudonym_at_rest, n in pseudonyms:
        frequent.setdefault(author, {})[pseudonym_at_rest] = n
    for author, node in node_of.items():
        attributes = graph.nodes[node]
        counts = frequent[author]
        candidates = [stored[p] for p, n in counts.items() if n == max(counts.values()) and p in stored]
        got = tuple(attributes.get(f"network_{m}") for m in ("degree", "weighted_degree", "betweenness", "community"))
        assert got in [(c.degree, c.weighted_degree, c.betweenness, c.community) for c in candidates], author
        assert isinstance(got[0], int) and isinstance(got[1], float) and isinstance(got[3], int)


def _expected_edges(contexts: dict[object, dict[str, set[str]]]) -> dict[tuple[str, str], tuple[int, list[str]]]:
    """(author, author) → (shared contexts, shared terms) from context → author → terms."""
    weights: dict[tuple[str, str], int] = {}
    terms: dict[tuple[str, str], set[str]] = {}
    for authors in contexts.values():
        for a, b in itertools.combinations(sorted(authors), 2):
            weights[(a, b)] = weights.get((a, b), 0) + 1
            terms.setdefault((a, b), set()).update(authors[a] & authors[b])
    return {pair: (w, sorted(terms[pair])) for pair, w in weights.items()}


def test_network_by_search_term_and_run_validates_and_matches_the_database(engine, store, dataset, monkeypatch):
    rows = [r for r in expected_rows(engine) if r.author]
    contexts: dict[object, dict[str, set[str]]] = {}
    for r in rows:
        for term in r.search_terms_matched:
            contexts.setdefault((r.collection_run_id, term), {}).setdefault(r.author, set()).add(term)
    expected = _expected_edges(contexts)
    assert expected

    result, _ = export_network(engine, store, build_filters(), request_id="network")
    data, graph = _gexf(store, result)
    assert result.details["edge_basis"] == "search_term_and_run"
    assert set(graph.nodes) == {r.author for r in rows}
    posts = {a: sum(1 for r in rows if r.author == a) for a in graph.nodes}
    assert {n: d["posts"] for n, d in graph.nodes(data=True)} == posts
    got = {
        tuple(sorted((a, b))): (int(d["weight"]), d["shared_terms"].split("; ")) for a, b, d in graph.edges(data=True)
    }
    assert got == expected
    assert "Mallory" in graph and "Removed after a takedown" not in data.decode()

    key = "a-secret-key-of-some-length"
    monkeypatch.setenv(PSEUDONYM_KEY_VARIABLE, key)
    hidden, _ = export_network(engine, store, build_filters(), request_id="hidden", pseudonymize=True, dynamic=True)
    data, pseudonymous = _gexf(store, hidden)
    text_of_file = data.decode()
    assert not any(author in text_of_file for author in posts)
    renamed = {a: pseudonym(a, key.encode()) for a in graph}
    assert {frozenset(e) for e in pseudonymous.edges()} == {
        frozenset((renamed[a], renamed[b])) for a, b in graph.edges()
    }
    assert pseudonymous.graph["mode"] == "dynamic" and 'timeformat="date"' in text_of_file
    assert all("start" in d for _, d in pseudonymous.nodes(data=True))


def test_network_uses_events_when_they_exist(engine, store, dataset, monkeypatch):
    rows = [r for r in expected_rows(engine) if r.author]
    chosen = rows[:30]
    with engine.begin() as conn:  # what the events asset would write, inserted directly
        dimensions = conn.execute(
            text("SELECT atttypmod FROM pg_attribute WHERE attrelid = 'events'::regclass AND attname = 'centroid'")
        ).scalar_one()
        events = [
            conn.execute(
                text(
                    "INSERT INTO events (embedder, centroid, first_seen_at, last_seen_at) "
                    "VALUES ('test', array_fill(0.1, ARRAY[:d])::vector, now(), now()) RETURNING id"
                ),
                {"d": dimensions},
            ).scalar_one()
            for _ in range(3)
        ]
        for n, row in enumerate(chosen):
            conn.execute(
                text(
                    "INSERT INTO event_items (item_id, event_id, similarity, item_time, item_hash, source_id) "
                    "SELECT id, :e, 0.9, coalesce(published_at, fetched_at), content_hash, source_id "
                    "FROM raw_items WHERE id = :i"
                ),
                {"i": row.id, "e": events[n % 3]},
            )
    contexts: dict[object, dict[str, set[str]]] = {}
    for n, row in enumerate(chosen):
        contexts.setdefault(events[n % 3], {}).setdefault(row.author, set()).update(row.search_terms_matched)
    expected = _expected_edges(contexts)
    assert expected

    with engine.begin() as conn:  # the actors domain's archive-wide network, whose metrics the export carries
        archive = build_actor_network(conn)
        store_network_metrics(conn, archive, network_metrics(archive))
    result, _ = export_network(engine, store, build_filters(), request_id="by-events")
    _, graph = _gexf(store, result)
    assert result.details["edge_basis"] == "events"
    assert_network_metrics(engine, graph, {r.author: r.author for r in rows})
    key = "a-secret-key-of-some-length"
    monkeypatch.setenv(PSEUDONYM_KEY_VARIABLE, key)
    hidden, _ = export_network(engine, store, build_filters(), request_id="by-events-hidden", pseudonymize=True)
    data, pseudonymous = _gexf(store, hidden)
    assert_network_metrics(engine, pseudonymous, {r.author: pseudonym(r.author, key.encode()) for r in rows})
    assert not any(r.author in data.decode() for r in rows)
    got = {
        tuple(sorted((a, b))): (int(d["weight"]), [t for t in d["shared_terms"].split("; ") if t])
        for a, b, d in graph.edges(data=True)
    }
    assert got == expected
    assert graph.number_of_nodes() == len({r.author for r in rows})  # every author, linked or not

    crowded, _ = export_network(engine, store, build_filters(), request_id="crowded", max_authors_per_context=2)
    assert crowded.details["crowded_contexts_skipped"] == sum(1 for a in contexts.values() if len(a) > 2)


def _s3_store(s3_server, bucket: str):
    """A bucket of this test's own on the session's SeaweedFS server (buckets outlive a test)."""
    return ObjectStoreResource(endpoint=s3_server.endpoint, bucket=f"{bucket}-{uuid.uuid4().hex[:8]}",
                               access_key=s3_server.access_key, secret_key=s3_server.secret_key).get_store()  # fmt: skip


def test_s3_exports_download_through_the_presigned_url(engine, dataset, s3_server):
    store = _s3_store(s3_server, "exports-ok")
    results = export_content(engine, store, build_filters(), ["csv", "parquet"], request_id="via-s3")
    for result in results:
        assert result.download_url.startswith("http://") and "X-Amz-Signature" in result.download_url
        assert "X-Amz-Expires=3600" in result.download_url
        with urllib.request.urlopen(result.download_url, timeout=10) as response:
            body = response.read()
        assert hashlib.sha256(body).hexdigest() == result.sha256 and len(body) == result.size
    assert pq.read_table(io.BytesIO(body)).num_rows == len(expected_rows(engine))


class FailingUploads:
    """The real S3 store, but every upload's source stream dies after ``good_bytes``."""

    def __init__(self, store, good_bytes: int):
        self._store, self._good = store, good_bytes

    def __getattr__(self, name):
        return getattr(self._store, name)

    def put_stream(self, key, stream, content_type="application/octet-stream"):
        good = self._good

        class Dying(io.RawIOBase):
            def readable(self):
                return True

            def readinto(self, buffer):
                nonlocal good
                if good <= 0:
                    raise ConnectionResetError("producer died mid-upload")
                data = stream.read(min(len(buffer), good))
                good -= len(data)
                buffer[: len(data)] = data
                return len(data)

        return self._store.put_stream(key, io.BufferedReader(Dying()), content_type)


def test_a_fault_mid_upload_leaves_no_object_and_a_failed_export(engine, store, tmp_path, s3_server):
    big = write(tmp_path / "big.jsonl", "\n".join(
        json.dumps({"id": f"big-{n}", "title": f"Big {n}", "text": f"{n} " + "å" * 600_000,
                    "published_at": "2026-11-02T00:00:00Z"}) for n in range(16)
    ))  # fmt: skip
    ingest_collection_run(engine, store, collect(engine, store, [SourceRequest("big", "jsonl", path=str(big))]))
    s3 = _s3_store(s3_server, "exports-fault")
    # more than one 16 MiB part goes up before the fault, so a multipart upload is in flight
    with pytest.raises(ConnectionResetError):
        export_content(engine, FailingUploads(s3, 17 * 1024 * 1024), build_filters(), ["csv"], request_id="fault")
    assert s3.size(object_key("fault", "csv")) is None
    assert list(s3.list("exports/")) == []
    with engine.connect() as conn:
        status, error, sha = conn.execute(text("SELECT status, error, sha256 FROM exports")).one()
    assert status == "failed" and "producer died" in error and sha is None

    # the S3 server itself killed (SIGKILL) after the first part went up
    dying = StoppingUploads(s3, s3_server, after_bytes=17 * 1024 * 1024)
    with pytest.raises(Exception, match=SERVER_GONE):
        export_content(engine, dying, build_filters(), ["csv"], request_id="fault")
    assert dying.stream.stopped and not s3_server.running
    with engine.connect() as conn:
        status, error, sha = conn.execute(text("SELECT status, error, sha256 FROM exports")).one()
    assert status == "failed" and re.search(SERVER_GONE, error) and sha is None
    assert f"port={s3_server.port}" in error  # the reason names the endpoint that went away
    s3_server.start()
    assert s3.size(object_key("fault", "csv")) is None
    assert list(s3.list("exports/")) == []

    retried = export_content(engine, s3, build_filters(), ["csv"], request_id="fault")[0]
    assert s3.size(retried.object_key) == retried.size > 17 * 1024 * 1024
    with engine.connect() as conn:
        assert conn.execute(text("SELECT status, count(*) OVER () FROM exports")).one() == ("completed", 1)


def test_repeating_a_request_replaces_its_files_and_rows(engine, store, dataset):
    first = export_content(engine, store, build_filters(), ["csv", "ndjson"], request_id="again")
    second = export_content(engine, store, build_filters(), ["csv", "ndjson"], request_id="again")
    assert [r.object_key for r in first] == [r.object_key for r in second]
    assert [r.sha256 for r in first] == [r.sha256 for r in second]
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM exports")).scalar() == 2
        assert conn.execute(text("SELECT count(*) FROM audit_log WHERE action = 'export'")).scalar() == 4
    assert sorted(store.list("exports/")) == ["exports/again/items.csv", "exports/again/items.ndjson"]


def test_assets_materialize_with_run_config_and_pass_their_checks(resources, engine, dataset):
    result = dg.materialize(
        [content_exports, network_exports],
        resources=resources,
        run_config={
            "ops": {
                "content_exports": {"config": {"formats": ["csv", "parquet"], "sources": ["special"]}},
                "network_exports": {"config": {"languages": ["da", "en"]}},
            }
        },
    )
    assert result.success
    content = result.asset_materializations_for_node("content_exports")[0].metadata
    assert content["dagster/row_count"].value == sum(1 for r in expected_rows(engine) if r.source == "special")
    assert content["csv_download"].value.endswith(f"exports/{result.run_id}/items.csv")
    network = result.asset_materializations_for_node("network_exports")[0].metadata
    assert network["network"].value["nodes"] > 0
    checks = result.get_asset_check_evaluations()
    assert len(checks) == 4 and all(c.passed for c in checks)


def test_the_cli_exports_and_refuses_bad_filters(dagster_env, dataset):
    command = [
        sys.executable,
        "-m",
        "observatory_assets.cli",
        "export",
        "items",
        "--format",
        "csv",
        "--source",
        "special",
    ]
    done = subprocess.run(command, env=dagster_env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout.splitlines()[-1])
    assert record["format"] == "csv" and record["records"] == len(SPECIAL_ITEMS) - 1
    bad = subprocess.run(
        [*command[:-2], "--from", "yesterday-ish"],
        env=dagster_env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and "published_from" in bad.stderr
