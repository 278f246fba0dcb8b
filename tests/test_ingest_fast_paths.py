"""The ingest hot path's shortcuts (presence read only from rows that state any, one author verdict per
run and author, a JSONL line decoded only when needed, an item's text collapsed for its content hash with
what cleaning it learnt, a chunk of repeats resolved where it is staged) give exactly what the general
code gives."""

import io
import json
import random
from datetime import UTC, datetime

from sqlalchemy import text

from observatory_assets.defs.ingestion import loading, payload_reader, records
from observatory_assets.defs.ingestion.collect import SourceRequest, collect
from observatory_assets.defs.ingestion.loading import ingest_collection_run
from observatory_assets.defs.ingestion.normalizing import (
    COUNT_PATHS,
    HANDLE_FIELDS,
    NO_PRESENCE,
    PRESENCE_FIELDS,
    Presence,
    content_hash,
    normalize_record,
    read_presence,
)
from observatory_assets.defs.ingestion.payload_reader import RememberedAuthors
from observatory_assets.defs.ingestion.records import Record, Rejection
from observatory_assets.lib.pseudonyms import AuthorPolicy, author_pseudonym
from resources.postgres import create_database, drop_database, engine_for
from tests.test_ingest import snapshot


def test_every_field_presence_reads_is_one_the_shortcut_looks_for():
    for paths in COUNT_PATHS.values():
        for path in paths:
            assert path.split(",")[0] in PRESENCE_FIELDS
    assert {*HANDLE_FIELDS, "platform", "content_type"} <= PRESENCE_FIELDS


def test_a_row_stating_no_presence_takes_the_shortcut_and_one_stating_any_does_not():
    notes: set[str] = set()
    assert read_presence({"id": "1", "title": "t", "text": "x", "author": "a", "story": 3}, notes) is NO_PRESENCE
    assert NO_PRESENCE == Presence()
    nested = read_presence({"title": "t", "stats": {"playCount": "12", "diggCount": 3}}, notes)
    assert (nested.views, nested.likes, nested.shares) == (12, 3, None)
    assert read_presence({"screen_name": " @someone "}, notes).author_handle == "@someone"
    assert read_presence({"platform": "TikTok"}, notes).platform == "tiktok"


def _policies() -> list[AuthorPolicy]:
    key = b"k" * 32
    public = frozenset({author_pseudonym(key, "bluesky", "famous.example"), author_pseudonym(key, "jsonl", "Ann Lee")})
    return [AuthorPolicy(key), AuthorPolicy(key, clear=True), AuthorPolicy(key, public=public)]


def test_remembered_author_verdicts_equal_the_policy_on_every_row():
    rng = random.Random(5)
    authors = [None, "", "Ann Lee", "Bo Ek", "  ", "famous.example"]
    handles = [None, "famous.example", "@bo", "ann"]
    for policy in _policies():
        remembered = RememberedAuthors(policy, limit=3)  # small: the verdicts are forgotten and worked out again
        for _ in range(400):
            platform = rng.choice(["jsonl", "bluesky", None])
            author, handle = rng.choice(authors), rng.choice(handles)
            metadata = {"author_name": author, "story": rng.randrange(3), "did": "did:x", "lang": "da"}
            expected = policy.apply(platform, author, handle, dict(metadata))
            assert remembered.apply(platform, author, handle, dict(metadata)) == expected


def _rows_of_every_kind() -> list[str]:
    """Delivered rows for chunks of four: new items naming outlets, a malformed line and a rejection in
    the middle of a chunk, and a chunk of nothing but repeats (by key and by content) of earlier rows."""
    item = {"published_at": "2026-03-01T10:00:00Z"}
    rows = [
        {**item, "id": "a", "title": "Harbour reopens", "text": "Ships  return.", "source": "Daily Wire"},
        {**item, "id": "b", "title": "Rail strike ends", "text": "Trains run."},
        '{"id": "broken", "title": ',
        {**item, "id": "c", "title": "Budget passes", "text": "By one vote.", "publisher": {"name": "Courier"}},
        {**item, "id": "a", "title": "Harbour reopens", "text": "Ships return.", "source": "Daily Wire"},
        {**item, "id": "b2", "title": "RAIL STRIKE ENDS", "text": "Trains  run."},
        {**item, "id": "c", "title": "Budget passes", "text": "By one vote.", "publisher": {"name": "Courier"}},
        {**item, "id": "a3", "title": "Harbour reopens", "text": "Ships return.", "outlet": "Daily Wire"},
        {"id": "e", "title": "", "text": ""},
        {**item, "id": "d", "title": "Flood warning", "text": "Rivers rise.", "site": "Courier"},
        [1, 2],
        {**item, "id": "b", "title": "Rail strike ends, again", "text": "Other words."},
    ]
    return [row if isinstance(row, str) else json.dumps(row) for row in rows]


def _resolve_from_arrays(conn, reader, run_id, new_ids):
    """The general resolution: the rows the key insert did not return, sent as arrays."""
    pending = reader.not_inserted(new_ids)
    if not pending["record_nos"]:
        return []
    return conn.execute(text(loading.RESOLVE), {"run_id": run_id, **pending}).all()


def _load_and_reload(engine, store, payloads: list) -> list:
    """Each payload collected and ingested, then ingested again with force: the results and tables."""
    outcomes = []
    for name, path in payloads:
        run_id = collect(engine, store, [SourceRequest(name, "jsonl", path=str(path))])
        for force in (False, True):
            result = ingest_collection_run(engine, store, run_id, force=force)
            outcomes.append(
                (result.loaded, result.duplicates, result.rejected, result.by_source, result.reject_reasons)
            )
        outcomes.append(snapshot(engine))
    return outcomes


def test_resolving_a_chunk_from_staging_equals_resolving_it_from_arrays(
    pg_server, migrated_template, engine, store, tmp_path, monkeypatch
):
    monkeypatch.setattr(payload_reader, "CHUNK_ROWS", 4)
    monkeypatch.setattr(payload_reader, "BATCH_ROWS", 2)
    cold = tmp_path / "cold.jsonl"  # the cold start: three items into empty tables
    cold.write_text("".join(json.dumps({"id": f"k{i}", "title": f"Item {i}", "text": "t"}) + "\n" for i in range(3)))
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text("\n".join(_rows_of_every_kind()) + "\n")
    payloads = [("cold", cold), ("mixed", mixed)]

    staged_chunks = []
    general = loading._resolve

    def counting(conn, reader, run_id, new_ids):
        staged_chunks.append(not new_ids)
        return general(conn, reader, run_id, new_ids)

    monkeypatch.setattr(loading, "_resolve", counting)
    ours = _load_and_reload(engine, store, payloads)
    # the staged path ran for every chunk of the forced reloads and for the first load's chunk of repeats
    cold_chunks, mixed_chunks = [False], [False, True, False]
    assert staged_chunks == cold_chunks + [True] + mixed_chunks + [True] * len(mixed_chunks)

    monkeypatch.setattr(loading, "_resolve", _resolve_from_arrays)
    reference_url = create_database(pg_server, "fast_path_reference", template=migrated_template)
    reference = engine_for(reference_url)
    try:
        assert _load_and_reload(reference, store, payloads) == ours
    finally:
        reference.dispose()
        drop_database(pg_server, "fast_path_reference")
    mixed_first = ours[3]
    assert mixed_first[:3] == (4, 5, 3) and mixed_first[4] == {
        "invalid_json": 1,
        "empty_content": 1,
        "not_an_object": 1,
    }
    assert set(mixed_first[3]) == {"mixed", "Daily Wire", "Courier"}


def test_the_content_hash_of_a_normalized_item_is_the_content_hash_of_its_title_and_text():
    rng = random.Random(7)
    pieces = ["word", "Ærø", "ß", "  ", "\t", "\n", "\r\n", "\xa0", "\u3000", "\x00", "\x07", "\ud800", "e\u0301", " "]
    now = datetime(2026, 12, 1, tzinfo=UTC)
    for _ in range(500):
        title, body = ("".join(rng.choice(pieces) for _ in range(rng.randrange(8))) for _ in range(2))
        fields = {"id": "x", "title": title, "text": body}
        item = normalize_record(Record(fields, json.dumps(fields)), now)
        if isinstance(item, Rejection):
            assert item.reason == "empty_content"
            continue
        assert item.content_hash == content_hash(item.title, item.text)


def _as_read(record: Record | Rejection) -> tuple:
    return ("record", record.fields, record.text) if isinstance(record, Record) else ("rejection", record)


def test_a_jsonl_line_orjson_reads_gives_what_the_standard_library_reading_of_it_gives():
    lines = [
        b'{"id": "1", "title": "caf\xc3\xa9"}',
        b'{"title": "\xff"}',  # not UTF-8 inside a string
        b'{"title": "\xed\xa0\x80"}',  # an encoded surrogate
        b'\xef\xbb\xbf{"title": "bom"}',
        b'{"title": NaN}',
        b'{"title": "\\ud800"}',
        b'{"n": 123456789012345678901234567890}',
        b'{"n": 1.5, "m": 12345678901234567890123}',
        b'{"f": 1.5}',
        b'{"id": "broken", "title": ',
        b"[1, 2]",
        b'"text"',
        b'{"item": {"desc": "a clip"}, "source_platform": "tiktok"}',
    ]
    read = list(records.iter_records(io.BytesIO(b"\n".join(lines) + b"\n"), "jsonl"))
    assert [_as_read(record) for record in read] == [_as_read(records._jsonl_line(line + b"\n")) for line in lines]
    assert {type(record.raw) for record in read if isinstance(record, Record)} == {bytes, str}
