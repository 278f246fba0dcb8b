"""Parsing and normalization functions, called directly."""

import io
import json
from datetime import UTC, datetime

import pytest

from observatory_assets.defs.ingestion.normalizing import content_hash, normalize_record, parse_timestamp
from observatory_assets.defs.ingestion.records import Record, Rejection, count_records, html_to_text, iter_records
from observatory_assets.defs.ingestion.urls import normalize_url
from resources.object_store import LocalObjectStore

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-11-20T10:00:00Z", datetime(2026, 11, 20, 10, 0, tzinfo=UTC)),
        ("2026-11-20T12:00:00+02:00", datetime(2026, 11, 20, 10, 0, tzinfo=UTC)),
        ("2026-11-20 10:00:00", datetime(2026, 11, 20, 10, 0, tzinfo=UTC)),  # naive means UTC
        ("Fri, 20 Nov 2026 11:00:00 +0100", datetime(2026, 11, 20, 10, 0, tzinfo=UTC)),
        (1795687200, datetime(2026, 11, 26, 10, 0, tzinfo=UTC)),
        ("1795687200000", datetime(2026, 11, 26, 10, 0, tzinfo=UTC)),  # milliseconds
        ("", None),
        (None, None),
    ],
)
def test_parse_timestamp_gives_utc(value, expected):
    assert parse_timestamp(value) == expected


@pytest.mark.parametrize("value", ["next tuesday-ish", "31/31/2026", True, ["2026"]])
def test_parse_timestamp_rejects_garbage(value):
    with pytest.raises(ValueError):
        parse_timestamp(value)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("HTTPS://Example.COM:443/a/b?utm_source=x&z=1&a=2#top", "https://example.com/a/b?a=2&z=1"),
        ("http://example.com:8080", "http://example.com:8080/"),
        ("javascript:alert(1)", None),
        ("not a url", None),
        ("http://[bad", None),
        (42, None),
    ],
)
def test_normalize_url(url, expected):
    assert normalize_url(url) == expected


def test_content_hash_ignores_case_and_whitespace_only():
    assert content_hash("Hello  World", "a\nb") == content_hash("hello world", "a b")
    assert content_hash("Hello World", "a b") != content_hash("Hello World", "a c")
    assert content_hash("ab", "") != content_hash("a", "b")


def test_html_to_text_drops_markup_and_scripts():
    assert html_to_text("<p>Ny <b>klimaplan</b> &amp; mere</p><script>alert(1)</script>") == "Ny klimaplan & mere"


def test_normalize_record_maps_aliases_and_keeps_the_rest_as_metadata():
    record = Record(
        {
            "guid": "g1",
            "headline": " A  title ",
            "body": "Text\r\nhere",
            "link": "https://x.dk/a?fbclid=1",
            "date": "2026-11-20T10:00:00Z",
            "lang": "DA",
            "likes": 7,
        },
        raw="{}",
    )
    item = normalize_record(record, NOW)
    assert (item.external_id, item.title, item.text, item.url, item.language) == (
        "g1",
        "A title",
        "Text\nhere",
        "https://x.dk/a",
        "da",
    )
    assert item.raw_metadata == {"likes": 7, "original_url": "https://x.dk/a?fbclid=1"}


def test_item_without_any_id_gets_its_url_then_its_content_hash():
    with_url = normalize_record(Record({"title": "t", "url": "https://x.dk/1"}, "{}"), NOW)
    without = normalize_record(Record({"title": "t"}, "{}"), NOW)
    assert with_url.external_id == "https://x.dk/1"
    assert without.external_id == without.content_hash.hex()


def test_lone_surrogates_from_json_escapes_are_replaced_not_fatal():
    item = normalize_record(Record(json.loads('{"title": "bad \\ud800 pair"}'), "{}"), NOW)
    assert item.title == "bad \ufffd pair" and "lone_surrogates_replaced" in item.raw_metadata["_normalized"]


def test_4cat_ndjson_posts_are_flattened():
    line = json.dumps(
        {
            "source_platform": "tiktok.com",
            "timestamp_collected": 1795100000000,
            "item": {
                "id": "v1",
                "desc": "Video about klimaplan",
                "createTime": 1795000000,
                "author": {"uniqueId": "creator"},
            },
        }
    )
    (record,) = list(iter_records(io.BytesIO(line.encode()), "jsonl"))
    item = normalize_record(record, NOW)
    assert (item.external_id, item.text, item.author) == ("v1", "Video about klimaplan", "creator")
    assert item.raw_metadata["platform"] == "tiktok.com"


@pytest.mark.parametrize(
    ("fmt", "payload", "rows"),
    [
        ("jsonl", b'{"a": 1}\n\n  \n{"b": 2}\nbroken\n', 3),
        ("csv", b"id,title\n1,a\n\n2,b\n3\n", 3),
        ("rss", b"<html>not a feed</html>", 1),
    ],
)
def test_count_records_matches_what_iter_records_yields(fmt, payload, rows):
    assert count_records(io.BytesIO(payload), fmt) == rows == len(list(iter_records(io.BytesIO(payload), fmt)))


def test_unknown_format_is_an_error():
    with pytest.raises(ValueError, match="unknown payload format"):
        list(iter_records(io.BytesIO(b""), "xml"))


def test_rejection_payload_is_bounded_and_nul_free():
    (rejection,) = list(iter_records(io.BytesIO(b"\x00" + b"x" * 200_000 + b"\n"), "jsonl"))
    assert isinstance(rejection, Rejection) and rejection.reason == "invalid_json"
    assert "\x00" not in rejection.payload and len(rejection.payload) < 70_000


def test_local_store_writes_atomically_and_rejects_escaping_keys(tmp_path):
    store = LocalObjectStore(tmp_path)

    class Exploding(io.RawIOBase):
        def readable(self):
            return True

        def readinto(self, buffer):
            raise OSError("disk source failed")

    with pytest.raises(OSError):
        store.put_stream("exports/x.csv", io.BufferedReader(Exploding()))
    assert store.size("exports/x.csv") is None and list(store.list("")) == []
    for key in ("../etc/passwd", "/abs", "a//b", "a/./b"):
        with pytest.raises(ValueError):
            store.size(key)
