"""Bad input is quarantined with a reason; the good rows around it still load; nothing is injected."""

import json

import pytest
from sqlalchemy import text

from observatory_assets.defs.ingestion.collect import SourceRequest, collect
from observatory_assets.defs.ingestion.loading import ingest_collection_run
from observatory_assets.defs.ingestion.records import MAX_TEXT_CHARS
from tests.support.helpers import write

GOOD = {
    "title": "Regeringen fremlægger ny klimaplan",
    "text": "København og Aarhus.",
    "published_at": "2026-11-10T08:00:00+01:00",
}


def _ingest(engine, store, path, fmt, source="src"):
    run_id = collect(engine, store, [SourceRequest(source, fmt, path=str(path))])
    result = ingest_collection_run(engine, store, run_id)
    assert result.accounted_for
    return run_id, result


def _rejects(engine, run_id) -> dict[int, str]:
    with engine.connect() as conn:
        return dict(
            conn.execute(
                text("SELECT record_no, reason FROM rejected_items WHERE collection_run_id = :r"), {"r": run_id}
            ).all()
        )


def _titles(engine, run_id) -> set[str]:
    with engine.connect() as conn:
        return set(
            conn.execute(text("SELECT title FROM raw_items WHERE collection_run_id = :r"), {"r": run_id}).scalars()
        )


def test_jsonl_bad_rows_are_rejected_with_reasons_and_good_rows_load(engine, store, tmp_path):
    lines = [
        json.dumps({"id": "ok-1", **GOOD}).encode(),
        b'{"id": "broken", "title": "unterminated',
        '{"id": "latin1", "title": "K\u00f8benhavn"}'.encode("latin-1"),
        json.dumps({"id": "nodate", "title": "No date at all"}).encode(),
        json.dumps({"id": "baddate", "title": "Bad date", "published_at": "31/31/2026 25:61"}).encode(),
        json.dumps({"id": "future", "title": "From 2199", "published_at": "2199-01-01T00:00:00Z"}).encode(),
        json.dumps({"id": "ancient", "title": "Epoch zero", "published_at": 0}).encode(),
        json.dumps({"id": "empty", "title": "", "text": "   "}).encode(),
        json.dumps({"id": "nul", "title": "NUL\u0000byte", "text": "a\u0000b", "published_at": "2026-11-01"}).encode(),
        json.dumps({"id": "huge", "title": "Huge", "text": "x" * (10 * 1024 * 1024)}).encode(),
        json.dumps({"id": "dict", "title": {"nested": True}}).encode(),
        b"[1, 2, 3]",
        json.dumps({"id": "ok-2", "title": "Second good row", "published_at": "2026-11-11T09:00:00Z"}).encode(),
    ]
    path = write(tmp_path / "bad.jsonl", b"\n".join(lines) + b"\n")
    run_id, result = _ingest(engine, store, path, "jsonl")
    assert result.delivered == 13
    assert _rejects(engine, run_id) == {
        2: "invalid_json", 3: "invalid_utf8", 5: "unparseable_date", 6: "future_date", 7: "implausible_date",
        8: "empty_content", 10: "field_too_large", 11: "invalid_field_type", 12: "not_an_object",
    }  # fmt: skip
    assert _titles(engine, run_id) == {GOOD["title"], "No date at all", "NULbyte", "Second good row"}
    with engine.connect() as conn:
        huge = conn.execute(
            text(
                "SELECT payload_bytes, length(payload), payload_key FROM rejected_items "
                "WHERE reason = 'field_too_large'"
            )
        ).one()
        nul_meta = conn.execute(text("SELECT raw_metadata FROM raw_items WHERE external_id = 'nul'")).scalar()
        undated = conn.execute(
            text("SELECT tableoid::regclass::text FROM raw_items WHERE external_id = 'nodate'")
        ).scalar()
    assert huge[0] > 10 * 1024 * 1024 and huge[1] < 70_000 and huge[2].startswith(f"collection_runs/{run_id}/")
    assert nul_meta["_normalized"] == ["nul_bytes_removed"]
    assert undated == "raw_items_default"


def test_csv_with_a_broken_row_and_invalid_utf8(engine, store, tmp_path):
    content = (
        (
            b"id,title,text,published_at\r\n"
            b"1,Good one,body,2026-11-01T10:00:00Z\r\n"
            b"2,Too few fields\r\n"
            b'3,"Quoted, with comma","multi\nline",2026-11-02T10:00:00Z\r\n'
        )
        + "4,Bad \u00f8 bytes,x,2026-11-02\r\n".encode("latin-1")
        + b"5,Last good,x,2026-11-03\r\n"
    )
    run_id, result = _ingest(engine, store, write(tmp_path / "f.csv", content), "csv")
    assert result.delivered == 5
    assert _rejects(engine, run_id) == {2: "csv_field_count", 4: "invalid_utf8"}
    assert _titles(engine, run_id) == {"Good one", "Quoted, with comma", "Last good"}


@pytest.mark.parametrize(
    "document",
    [b"<html><body>502 Bad Gateway</body></html>", b"\x00\x01 not xml at all", b""],
    ids=["html-error-page", "binary", "empty"],
)
def test_unreadable_feed_is_one_rejected_row(engine, store, tmp_path, document):
    run_id, result = _ingest(engine, store, write(tmp_path / "feed.xml", document), "rss")
    assert (result.delivered, result.loaded) == (1, 0)
    assert _rejects(engine, run_id) == {1: "malformed_feed"}


def test_truncated_feed_loads_the_entries_it_still_has(engine, store, tmp_path):
    feed = (
        '<?xml version="1.0"?><rss version="2.0"><channel><title>t</title>'
        "<item><guid>a</guid><title>Complete entry</title><pubDate>Tue, 10 Nov 2026 08:00:00 GMT</pubDate></item>"
        "<item><guid>b</guid><title>Cut off"
    )
    run_id, result = _ingest(engine, store, write(tmp_path / "feed.xml", feed), "rss")
    assert "Complete entry" in _titles(engine, run_id)
    with engine.connect() as conn:
        problems = conn.execute(text("SELECT raw_metadata->>'feed_problem' FROM raw_items")).scalars().all()
    assert problems and all(problems)


def test_duplicate_ids_inside_one_batch_are_counted_and_linked(engine, store, tmp_path):
    rows = [
        {"id": "a", "title": "First", "published_at": "2026-11-01"},
        {"id": "a", "title": "Same id, new text", "published_at": "2026-11-01"},
        {"id": "b", "title": "First", "published_at": "2026-11-01"},  # same content as "a"
        {"id": "c", "title": "Third", "published_at": "2026-11-01"},
    ]
    path = write(tmp_path / "d.jsonl", "\n".join(json.dumps(r) for r in rows))
    run_id, result = _ingest(engine, store, path, "jsonl")
    assert (result.loaded, result.duplicates, result.rejected) == (2, 2, 0)
    with engine.connect() as conn:
        links = conn.execute(
            text(
                "SELECT d.record_no, d.matched_on, k.record_no FROM item_duplicates d "
                "JOIN item_keys k ON k.item_id = d.duplicate_of_item_id ORDER BY 1"
            )
        ).all()
    assert [tuple(link) for link in links] == [(2, "source_external_id", 1), (3, "content_hash", 1)]


def test_hostile_strings_are_stored_as_text_not_executed(engine, store, tmp_path):
    rows = [
        {
            "id": "x'); DROP TABLE raw_items;--",
            "title": "Robert'); DELETE FROM sources;--",
            "published_at": "2026-11-01",
        },
        {
            "id": "html",
            "title": "<script>alert(1)</script>",
            "text": "<img src=x onerror=alert(1)>",
            "published_at": "2026-11-01",
        },
        {"id": "copy", "title": "tab\there \\N and \\. newline\nend", "published_at": "2026-11-01"},
    ]
    path = write(tmp_path / "h.jsonl", "\n".join(json.dumps(r) for r in rows))
    run_id, result = _ingest(engine, store, path, "jsonl")
    assert result.loaded == 3
    with engine.connect() as conn:
        stored = dict(conn.execute(text("SELECT external_id, title FROM raw_items")).all())
        assert conn.execute(text("SELECT count(*) FROM sources")).scalar() == 1
    assert stored["x'); DROP TABLE raw_items;--"] == "Robert'); DELETE FROM sources;--"
    assert stored["html"] == "<script>alert(1)</script>"
    assert stored["copy"] == "tab here \\N and \\. newline end"  # titles are whitespace-collapsed, COPY escapes kept


def test_csv_rows_after_an_oversized_field_still_load(engine, store, tmp_path):
    rows = ["id,title,text,published_at"]
    rows += [f"{n},Row {n},{'long ' * 40_000 if n == 2 else 'short'},2026-11-0{n}T10:00:00Z" for n in range(1, 7)]
    run_id, result = _ingest(engine, store, write(tmp_path / "long.csv", "\r\n".join(rows).encode() + b"\r\n"), "csv")
    assert (result.delivered, result.loaded, result.rejected) == (6, 6, 0)
    assert _titles(engine, run_id) == {f"Row {n}" for n in range(1, 7)}


def test_csv_field_beyond_the_item_size_limit_rejects_its_row_only(engine, store, tmp_path):
    oversized = "x" * (MAX_TEXT_CHARS + 1)
    content = f'id,title,text\r\n1,First,a\r\n2,Oversized,{oversized}\r\n3,"Quoted",b\r\n4,Last,c\r\n'.encode()
    run_id, result = _ingest(engine, store, write(tmp_path / "huge.csv", content), "csv")
    assert (result.delivered, result.loaded, result.rejected) == (4, 3, 1)
    assert _rejects(engine, run_id) == {2: "field_too_large"}
    assert _titles(engine, run_id) == {"First", "Quoted", "Last"}
