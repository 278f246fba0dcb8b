"""Object storage for raw payloads, exports, archives and backups.

Two backends behind one small interface: a local directory (embedded default)
and S3/MinIO through the ``minio`` client. Every write is atomic: a reader sees
the whole object under its final key or nothing, never a partial upload.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import BinaryIO, Protocol

import dagster as dg
from pydantic import Field

from resources.files import OutsideRoots, open_below

S3_PART_SIZE = 16 * 1024 * 1024
_COPY_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class StoredObject:
    """What was written: its key, size in bytes and SHA-256 (hex)."""

    key: str
    size: int
    sha256: str


@dataclass(frozen=True)
class ObjectEntry:
    """A listed object: its key, size in bytes and ETag (changes whenever the object is rewritten)."""

    key: str
    size: int
    etag: str


class _HashingReader:
    """Wraps a readable stream, counting and hashing what passes through."""

    def __init__(self, stream: BinaryIO):
        self._stream = stream
        self.size = 0
        self.digest = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        chunk = self._stream.read(n)
        self.size += len(chunk)
        self.digest.update(chunk)
        return chunk


def read_hashed(store: ObjectStore, key: str, into: BinaryIO | None = None) -> tuple[int, str]:
    """Stream object ``key`` (copied into ``into`` when given) and return its size and SHA-256: the one
    way an object is checked against what was recorded when it was written."""
    with store.open(key) as stream:
        reader = _HashingReader(stream)
        while chunk := reader.read(_COPY_CHUNK):
            if into is not None:
                into.write(chunk)
    return reader.size, reader.digest.hexdigest()


class ObjectStore(Protocol):
    """The operations the platform needs from object storage."""

    def put_stream(self, key: str, stream: BinaryIO, content_type: str = ...) -> StoredObject: ...

    @contextmanager
    def open(self, key: str) -> Iterator[BinaryIO]: ...

    def size(self, key: str) -> int | None: ...

    def list(self, prefix: str) -> Iterator[str]: ...

    def entries(self, prefix: str) -> Iterator[ObjectEntry]: ...

    def copy(self, source: str, target: str) -> None: ...

    def delete(self, key: str) -> None: ...

    def download_url(self, key: str, expires: timedelta = ...) -> str: ...


def _check_key(key: str) -> str:
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"invalid object key: {key!r}")
    return key


class LocalObjectStore:
    """Objects as files below ``root``; writes land in ``root/.partial`` and are renamed into place."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.root / _check_key(key)

    def put_stream(self, key: str, stream: BinaryIO, content_type: str = "application/octet-stream") -> StoredObject:
        target = self._path(key)
        partial_dir = self.root / ".partial"
        partial_dir.mkdir(parents=True, exist_ok=True)
        partial = partial_dir / uuid.uuid4().hex
        reader = _HashingReader(stream)
        try:
            with open(partial, "wb") as out:
                shutil.copyfileobj(reader, out, _COPY_CHUNK)
                out.flush()
                os.fsync(out.fileno())
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
        return StoredObject(key, reader.size, reader.digest.hexdigest())

    @contextmanager
    def open(self, key: str) -> Iterator[BinaryIO]:
        """The object's file, never through a symbolic link, nor to a file outside the store's root (a
        link dropped in the inbox must not make a payload of what it points at)."""
        try:
            handle = open_below(self._path(key), [self.root])
        except OutsideRoots as error:
            raise ValueError(f"object {key!r} refused: {error}") from None
        with handle:
            yield handle

    def size(self, key: str) -> int | None:
        path = self._path(key)
        return path.stat().st_size if path.is_file() else None

    def list(self, prefix: str) -> Iterator[str]:
        # walk only the directory the prefix names, not the whole store
        start = self.root / prefix.rsplit("/", 1)[0] if "/" in prefix else self.root
        if not start.is_dir():
            return
        for path in sorted(start.rglob("*")):
            key = path.relative_to(self.root).as_posix()
            regular = path.is_file() and not path.is_symlink()  # a symbolic link is no object
            if regular and key.startswith(prefix) and not key.startswith(".partial/"):
                yield key

    def entries(self, prefix: str) -> Iterator[ObjectEntry]:
        # a file's ETag: its modification time and size, which a rewrite changes
        for key in self.list(prefix):
            stat = self._path(key).stat()
            yield ObjectEntry(key, stat.st_size, f"{stat.st_mtime_ns:x}-{stat.st_size:x}")

    def copy(self, source: str, target: str) -> None:
        with self.open(source) as stream:
            self.put_stream(target, stream)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def download_url(self, key: str, expires: timedelta = timedelta(hours=1)) -> str:
        return str(self._path(key).resolve())


class S3ObjectStore:
    """Objects in an S3 bucket (MinIO, AWS, or any S3 endpoint) through the ``minio`` client."""

    def __init__(self, client, bucket: str):
        self.client = client
        self.bucket = bucket
        if not client.bucket_exists(bucket):
            client.make_bucket(bucket)

    def put_stream(self, key: str, stream: BinaryIO, content_type: str = "application/octet-stream") -> StoredObject:
        # A multipart upload becomes visible only when it completes; minio aborts it on error.
        reader = _HashingReader(stream)
        self.client.put_object(
            self.bucket, _check_key(key), reader, length=-1, part_size=S3_PART_SIZE, content_type=content_type
        )
        return StoredObject(key, reader.size, reader.digest.hexdigest())

    @contextmanager
    def open(self, key: str) -> Iterator[BinaryIO]:
        response = self.client.get_object(self.bucket, _check_key(key))
        response.auto_close = False  # io wrappers (TextIOWrapper for CSV) read past the end and need it open
        try:
            yield response
        finally:
            response.close()
            response.release_conn()

    def size(self, key: str) -> int | None:
        from minio.error import S3Error

        try:
            return self.client.stat_object(self.bucket, _check_key(key)).size
        except S3Error as error:
            if error.code in ("NoSuchKey", "NoSuchObject", "ResourceNotFound"):
                return None
            raise

    def list(self, prefix: str) -> Iterator[str]:
        for obj in self.client.list_objects(self.bucket, prefix=prefix, recursive=True):
            yield obj.object_name

    def entries(self, prefix: str) -> Iterator[ObjectEntry]:
        for obj in self.client.list_objects(self.bucket, prefix=prefix, recursive=True):
            yield ObjectEntry(obj.object_name, obj.size, obj.etag.strip('"'))

    def copy(self, source: str, target: str) -> None:
        from minio.commonconfig import CopySource

        self.client.copy_object(self.bucket, _check_key(target), CopySource(self.bucket, _check_key(source)))

    def delete(self, key: str) -> None:
        self.client.remove_object(self.bucket, _check_key(key))

    def download_url(self, key: str, expires: timedelta = timedelta(hours=1)) -> str:
        return self.client.presigned_get_object(self.bucket, _check_key(key), expires=expires)


def put_bytes(
    store: ObjectStore, key: str, data: bytes, content_type: str = "application/octet-stream"
) -> StoredObject:
    """Store a small in-memory payload."""
    import io

    return store.put_stream(key, io.BytesIO(data), content_type)


def download_metadata(url: str) -> dg.MetadataValue:
    """A download location for materialization metadata: a clickable (pre-signed) URL, or a local path."""
    return dg.MetadataValue.url(url) if url.startswith(("http://", "https://")) else dg.MetadataValue.path(url)


@contextmanager
def staged_upload(store: ObjectStore, key: str, content_type: str = "application/octet-stream") -> Iterator[BinaryIO]:
    """Write an object through a local temporary file, uploaded atomically when the block ends.

    For writers that need a seekable file (XLSX, Parquet) or produce data in
    pieces; memory stays constant whatever the object's size. Nothing is uploaded
    if the block raises. The resulting :class:`StoredObject` is set on the
    handle as ``.stored``.
    """
    with tempfile.NamedTemporaryFile(prefix="observatory-", suffix=".part") as handle:
        yield handle
        handle.flush()
        handle.seek(0)
        handle.stored = store.put_stream(key, handle, content_type)  # type: ignore[attr-defined]


class ObjectStoreResource(dg.ConfigurableResource):
    """Object storage: a local directory when ``endpoint`` is unset, otherwise S3/MinIO."""

    local_root: str = Field(default="", description="Directory of the local store (embedded default).")
    endpoint: str = Field(default="", description="S3 endpoint host:port; empty means the local store.")
    bucket: str = Field(default="observatory", description="S3 bucket.")
    access_key: str = Field(default="", description="S3 access key.")
    secret_key: str = Field(default="", description="S3 secret key.")
    secure: bool = Field(default=False, description="Use TLS for the S3 endpoint.")
    region: str = Field(default="us-east-1", description="S3 region.")

    def get_store(self) -> ObjectStore:
        if not self.endpoint:
            return LocalObjectStore(Path(self.local_root))
        return _s3_store(self.endpoint, self.bucket, self.access_key, self.secret_key, self.secure, self.region)


_S3_STORES: dict[tuple, S3ObjectStore] = {}


def _s3_store(endpoint: str, bucket: str, access_key: str, secret_key: str, secure: bool, region: str) -> S3ObjectStore:
    key = (endpoint, bucket, access_key, secret_key, secure, region)
    if key not in _S3_STORES:
        from minio import Minio

        client = Minio(endpoint, access_key=access_key, secret_key=secret_key, secure=secure, region=region)
        _S3_STORES[key] = S3ObjectStore(client, bucket)
    return _S3_STORES[key]
