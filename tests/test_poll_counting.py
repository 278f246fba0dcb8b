"""The poll cycle counts a changed feed's records without feedparser, and counts what ingestion's reader does."""

from __future__ import annotations

import io

import pytest

from observatory_assets.defs.collection.counting import count_payload
from observatory_assets.defs.ingestion.records import count_records

RSS = (
    b'<?xml version="1.0"?><rss version="2.0" xmlns:media="http://search.yahoo.com/mrss/"><channel><title>T</title>'
    b"<item><guid>1</guid><media:content url='x'/></item><item><guid>2</guid></item><Item><guid>3</guid></Item>"
    b"</channel></rss>"
)
ATOM = (
    b'<?xml version="1.0" encoding="utf-8"?><feed xmlns="http://www.w3.org/2005/Atom"><title>T</title>'
    b"<entry><id>a</id><title>A</title></entry><entry><id>b</id><title>B</title></entry></feed>"
)
RDF = (
    b'<?xml version="1.0"?><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" '
    b'xmlns="http://purl.org/rss/1.0/"><channel rdf:about="x"><title>T</title></channel>'
    b'<item rdf:about="1"><title>1</title></item><item rdf:about="2"><title>2</title></item></rdf:RDF>'
)
FOREIGN_ITEMS = (
    b'<?xml version="1.0"?><rss version="2.0" xmlns:x="http://example.org/other"><channel><title>T</title>'
    b"<item><guid>1</guid><x:item>not an entry</x:item></item></channel></rss>"
)
NOT_WELL_FORMED = b'<?xml version="1.0"?><rss version="2.0"><channel><title>T & co</title><item><guid>1</guid></item>'
LATIN = '<?xml version="1.0" encoding="windows-1252"?><rss version="2.0"><channel><item><title>Å “q”</title></item>'
EMPTY = b'<?xml version="1.0"?><rss version="2.0"><channel><title>T</title></channel></rss>'
HTML = b"<html><body><p>not a feed</p></body></html>"


@pytest.mark.parametrize(
    "document",
    [RSS, ATOM, RDF, FOREIGN_ITEMS, NOT_WELL_FORMED, (LATIN + "</channel></rss>").encode("cp1252"), EMPTY, HTML],
    ids=["rss", "atom", "rdf", "foreign-items", "not-well-formed", "windows-1252", "empty", "html"],
)
def test_a_feed_is_counted_as_ingestion_reads_it(document: bytes):
    assert count_payload(io.BytesIO(document), "rss") == count_records(io.BytesIO(document), "rss")


def test_other_formats_are_counted_by_ingestion_s_reader():
    lines = b'{"a": 1}\n\n{"a": 2}\n'
    assert count_payload(io.BytesIO(lines), "jsonl") == 2
