"""The S3 object-store path against a real S3 server on loopback (SeaweedFS's ``weed mini``, keys
required): payloads, formats, pre-signed URLs, and uploads broken off by the producer or by the
server itself being killed mid-upload leave nothing under the final key."""

import io
import re
import urllib.request
import uuid

import pytest
from minio.error import S3Error
from sqlalchemy import text

from observatory_assets.defs.ingestion.collect import SourceRequest, collect, create_collection_run, run_collection
from observatory_assets.defs.ingestion.loading import ingest_collection_run
from resources import ObjectStoreResource, PostgresResource
from resources.object_store import put_bytes, staged_upload
from tests.support.helpers import write
from tests.support.s3 import SERVER_GONE, StoppingUploads


def _bucket_for(request) -> str:
    """A bucket of this test's own (the session's server keeps every bucket until it ends)."""
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    return f"obs-{slug}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def s3(s3_server, request):
    return ObjectStoreResource(endpoint=s3_server.endpoint, bucket=_bucket_for(request),
                               access_key=s3_server.access_key, secret_key=s3_server.secret_key)  # fmt: skip


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
    rss = (
        '<?xml version="1.0"?><rss version="2.0"><channel><title>t</title>'
        "<item><guid>r1</guid><title>Feed item</title><pubDate>Tue, 10 Nov 2026 08:00:00 GMT</pubDate></item>"
        "</channel></rss>"
    )
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


def test_the_server_requires_keys(s3_server, s3):
    s3.get_store()  # the right keys work (and create the bucket)
    with pytest.raises(S3Error) as wrong_secret:
        list(s3_server.client(secret_key="not-the-secret").list_objects(s3.bucket))
    assert wrong_secret.value.code in ("SignatureDoesNotMatch", "AccessDenied")
    with pytest.raises(S3Error) as anonymous:
        list(s3_server.client(access_key="", secret_key="").list_objects(s3.bucket))
    assert anonymous.value.code == "AccessDenied"
    with pytest.raises(S3Error) as unknown:
        ObjectStoreResource(endpoint=s3_server.endpoint, bucket=s3.bucket, access_key="intruder",
                            secret_key=s3_server.secret_key).get_store()  # fmt: skip
    assert unknown.value.code in ("InvalidAccessKeyId", "AccessDenied")


def test_the_server_killed_mid_upload_leaves_no_object_and_the_retry_succeeds(s3_server, s3):
    # The server dies once the body is read, before it is sent. Killed between the parts of a
    # multipart upload: the export and backup fault tests (test_exports.py, test_backups.py).
    store = s3.get_store()
    size = 64 * 1024
    dying = StoppingUploads(store, s3_server, after_bytes=size)
    with pytest.raises(Exception, match=SERVER_GONE) as failure:
        dying.put_stream("collection_runs/1/000-big.jsonl", io.BytesIO(b"y" * size))
    assert dying.stream.stopped and not s3_server.running
    assert f"port={s3_server.port}" in str(failure.value)  # the error names the endpoint
    s3_server.start()
    assert store.size("collection_runs/1/000-big.jsonl") is None
    assert list(store.list("collection_runs/")) == []
    stored = store.put_stream("collection_runs/1/000-big.jsonl", io.BytesIO(b"y" * size))
    assert store.size(stored.key) == stored.size == size


def test_the_server_killed_mid_payload_upload_fails_the_run_and_the_retry_loads_it(engine, s3_server, s3, tmp_path):
    store = s3.get_store()
    lines = "".join(f'{{"id": "{n}", "title": "Item {n}", "text": "{"z" * 2000}"}}\n' for n in range(600))
    payload = write(tmp_path / "p.jsonl", lines)  # about 1.2 MB: one part
    run_id = create_collection_run(engine, [SourceRequest("s3-fault", "jsonl", path=str(payload))])
    with pytest.raises(Exception, match=SERVER_GONE):
        run_collection(engine, StoppingUploads(store, s3_server, after_bytes=1), run_id)
    with engine.connect() as conn:
        status, error = conn.execute(
            text("SELECT status, error FROM collection_runs WHERE id = :id"), {"id": run_id}
        ).one()
    assert status == "failed" and re.search(SERVER_GONE, error)
    s3_server.start()
    assert list(store.list(f"collection_runs/{run_id}/")) == []
    run_collection(engine, store, run_id)  # the retry of the same run
    result = ingest_collection_run(engine, store, run_id)
    assert (result.loaded, result.rejected) == (600, 0)
    assert len(list(store.list(f"collection_runs/{run_id}/"))) == 1


def test_the_database_url_shown_in_metadata_never_holds_the_password():
    assert "hunter2" not in PostgresResource(url="postgresql://u:hunter2@db/x").display_url
