"""The S3 object-store path against a real S3 HTTP endpoint on loopback (moto's server)."""

import io
import urllib.request

import pytest
from sqlalchemy import text

from observatory_assets.collect import SourceRequest, collect
from observatory_assets.loading import ingest_collection_run
from resources import ObjectStoreResource, PostgresResource
from resources.object_store import put_bytes, staged_upload
from tests.conftest import write


@pytest.fixture
def s3(s3_endpoint, request):
    bucket = "obs-" + request.node.name.replace("_", "-")[:40].lower()
    return ObjectStoreResource(endpoint=s3_endpoint, bucket=bucket, access_key="test", secret_key="test")


def test_collect_and_ingest_through_s3(engine, database_url, s3, tmp_path):
    store = s3.get_store()
    payload = write(tmp_path / "p.jsonl", '{"id": "1", "title": "Via S3", "published_at": "2026-11-02"}\nbroken\n')
    run_id = collect(engine, store, [SourceRequest("s3-source", "jsonl", path=str(payload))])
    result = ingest_collection_run(engine, store, run_id)
    assert (result.loaded, result.rejected) == (1, 1)
    keys = list(store.list(f"collection_runs/{run_id}/"))
    assert len(keys) == 1
    with store.open(keys[0]) as stream:
        assert stream.read() == payload.read_bytes()  # the payload is kept byte for byte
    with engine.connect() as conn:
        assert conn.execute(text("SELECT payload_key FROM rejected_items")).scalar() == keys[0]


def test_every_payload_format_reads_back_from_s3(engine, s3, tmp_path):
    store = s3.get_store()
    rss = ('<?xml version="1.0"?><rss version="2.0"><channel><title>t</title>'
           "<item><guid>r1</guid><title>Feed item</title><pubDate>Tue, 10 Nov 2026 08:00:00 GMT</pubDate></item>"
           "</channel></rss>")
    requests = [
        SourceRequest("csv", "csv", path=str(write(tmp_path / "a.csv", "id,title\n1,CSV item\n2,Another\n"))),
        SourceRequest("rss", "rss", path=str(write(tmp_path / "a.xml", rss))),
        SourceRequest("jsonl", "jsonl", path=str(write(tmp_path / "a.jsonl", '{"id": "j", "title": "JSONL item"}\n'))),
    ]
    run_id = collect(engine, store, requests)
    result = ingest_collection_run(engine, store, run_id)
    assert (result.delivered, result.loaded) == (4, 4)


def test_presigned_url_downloads_the_object(s3):
    store = s3.get_store()
    stored = put_bytes(store, "exports/hello.txt", "hej æøå".encode())
    assert store.size("exports/hello.txt") == stored.size
    with urllib.request.urlopen(store.download_url("exports/hello.txt"), timeout=10) as response:
        assert response.read().decode() == "hej æøå"
    store.delete("exports/hello.txt")
    assert store.size("exports/hello.txt") is None


class FailingStream(io.RawIOBase):
    """Yields some data, then fails like a producer dying mid-upload."""

    def __init__(self, good_bytes: int):
        self.left = good_bytes

    def readable(self):
        return True

    def readinto(self, buffer):
        if self.left <= 0:
            raise OSError("producer died")
        n = min(len(buffer), self.left)
        buffer[:n] = b"x" * n
        self.left -= n
        return n


@pytest.mark.parametrize("size", [1024, 40 * 1024 * 1024], ids=["single-part", "multipart"])
def test_a_failed_upload_leaves_no_object_under_the_key(s3, size):
    store = s3.get_store()
    with pytest.raises(OSError):
        store.put_stream("backups/partial.bin", io.BufferedReader(FailingStream(size)))
    assert store.size("backups/partial.bin") is None
    with pytest.raises(RuntimeError), staged_upload(store, "exports/never.csv") as handle:
        handle.write(b"a,b\n")
        raise RuntimeError("writer failed")
    assert store.size("exports/never.csv") is None


def test_the_database_url_shown_in_metadata_never_holds_the_password():
    assert "hunter2" not in PostgresResource(url="postgresql://u:hunter2@db/x").display_url
