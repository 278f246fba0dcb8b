"""The hot path's shortcuts give exactly what the general code gives."""

import json
import random

import pytest

from observatory_assets.defs.ingestion.normalizing import normalize_record
from observatory_assets.defs.ingestion.records import Record, iter_records
from observatory_assets.defs.ingestion.urls import normalize_url, parsed_url, plain_url
from observatory_assets.lib.text import collapse_whitespace


def test_the_plain_url_shortcut_agrees_with_urllib_on_random_urls():
    rng = random.Random(11)
    alphabet = [*"aZ09._-~=&?#/:@%+ ;[]\tü", "utm_source", "fbclid", "www.x.example"]
    shortcuts = 0
    for _ in range(20_000):
        url = rng.choice(["http://", "HTTPS://", "https://", "ftp://", ""])
        url = (url + "".join(rng.choice(alphabet) for _ in range(rng.randrange(12)))).strip()
        plain = plain_url(url)
        if plain is not None:
            shortcuts += 1
            assert plain == parsed_url(url), url
    assert shortcuts > 500  # the shortcut is actually taken


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("HTTPS://News.Example/a/b?utm_source=feed&z=1&a=&b", "https://news.example/a/b?a=&b=&z=1"),
        ("http://x.example", "http://x.example/"),
        ("http://x.example:80/p?q=a%20b#frag", "http://x.example/p?q=a+b"),
        ("https://x.example:8443/p", "https://x.example:8443/p"),
        ("mailto:a@b.example", None),
    ],
)
def test_normalize_url_examples(url, expected):
    assert normalize_url(url) == expected


@pytest.mark.parametrize("text", ["plain words", " lead", "trail ", "two  spaces", "tab\there", "nbsp\u00a0x", "a\nb"])
def test_collapse_shortcut(text):
    assert collapse_whitespace(text) == " ".join(text.split())


@pytest.mark.parametrize(
    "value",
    [
        '{"id": 123456789012345678901234567890, "title": "big id"}',
        '{"id": "nan", "title": "t", "score": NaN}',
        '{"id": "s", "title": "lone \\ud800 surrogate"}',
        '{"id": "e", "title": "emoji \\ud83d\\ude00"}',
        '{"id": 12.5, "title": "a float id", "nested": [{"big": 99999999999999999999999}]}',
    ],
)
def test_json_lines_read_as_the_standard_library_reads_them(value, tmp_path):
    """orjson reads these differently or not at all; the rows must read as before."""
    path = tmp_path / "x.jsonl"
    path.write_text(value + "\n", encoding="utf-8")
    with open(path, "rb") as stream:
        (record,) = iter_records(stream, "jsonl")
    assert isinstance(record, Record)
    assert repr(record.fields) == repr(json.loads(value))
    item = normalize_record(record)
    assert item.external_id == str(json.loads(value)["id"])


@pytest.mark.parametrize("line", ["5", "1.5e400", '"text"', "[1, 2.5]", "null"])
def test_json_lines_that_are_no_object_are_rejected_as_before(line, tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text(line + "\n", encoding="utf-8")
    with open(path, "rb") as stream:
        (rejection,) = iter_records(stream, "jsonl")
    assert rejection.reason == "not_an_object"
