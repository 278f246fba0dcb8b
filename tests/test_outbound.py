"""The guarded outbound client against real HTTP servers on loopback."""

from __future__ import annotations

import gzip
import itertools
import socket
import subprocess
import sys
import threading
import time
import zlib
from datetime import UTC, datetime, timedelta

import brotli
import pytest

from observatory_assets.lib.feed_server import Document, FeedServer, Reply
from resources.http_headers import retry_after_moment, retry_after_seconds
from resources.outbound import OutboundClient, OutboundError, OutboundPolicy, OutboundRefused
from tests.support.helpers import ROOT

OPEN = OutboundPolicy(allow_private_networks=True, user_agent="Observatory/test (+http://example.org/contact)")


@pytest.fixture
def server():
    with FeedServer() as running:
        yield running


def test_loopback_is_refused_unless_private_networks_are_allowed(server):
    server.documents["/feed"] = Document(b"<rss/>")
    with OutboundClient(OutboundPolicy(allow_private_networks=False)) as client:
        with pytest.raises(OutboundRefused, match="loopback address"):
            client.request("GET", server.url("/feed"))
    assert server.requests == []
    with OutboundClient(OPEN) as client:
        response, body = client.request("GET", server.url("/feed"))
    assert (response.status_code, body) == (200, b"<rss/>")
    assert server.requests[0][1]["User-Agent"] == OPEN.user_agent


def test_a_redirect_to_a_refused_address_is_not_followed():
    with FeedServer("127.0.0.2") as allowed, FeedServer("127.0.0.1") as internal:
        internal.documents["/secret"] = Document(b"metadata")
        allowed.routes["/feed"] = lambda _: Reply(302, {"Location": internal.url("/secret")})
        policy = OutboundPolicy(allow_private_networks=False, allowed_networks=("127.0.0.2/32",))
        with OutboundClient(policy) as client, pytest.raises(OutboundRefused, match="loopback"):
            client.request("GET", allowed.url("/feed"), max_redirects=5)
        assert len(allowed.requests) == 1 and internal.requests == []


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "ftp://127.0.0.1/x", "gopher://127.0.0.1/", "/relative", "http://"]
)
def test_only_absolute_http_urls_are_sent(url):
    with OutboundClient(OPEN) as client, pytest.raises(OutboundRefused):
        client.request("GET", url)


def test_a_redirect_to_another_scheme_is_refused(server):
    server.routes["/feed"] = lambda _: Reply(301, {"Location": "file:///etc/passwd"})
    with OutboundClient(OPEN) as client, pytest.raises(OutboundRefused, match="http"):
        client.request("GET", server.url("/feed"), max_redirects=5)


def test_redirects_are_followed_by_hop_and_only_when_asked(server):
    server.routes["/old"] = lambda _: Reply(301, {"Location": "/moved"})
    server.routes["/moved"] = lambda _: Reply(302, {"Location": "/feed"})
    server.documents["/feed"] = Document(b"<rss/>")
    with OutboundClient(OPEN) as client:
        response, body = client.request("GET", server.url("/old"), max_redirects=5)
        assert body == b"<rss/>" and [r.status for r in response.redirects] == [301, 302]
        assert response.permanent_url == server.url("/moved")
        unfollowed, _ = client.request("GET", server.url("/old"))
        assert unfollowed.status_code == 301 and unfollowed.redirects == []


def test_a_redirect_loop_and_too_many_hops_stop(server):
    server.routes["/a"] = lambda _: Reply(302, {"Location": "/b"})
    server.routes["/b"] = lambda _: Reply(302, {"Location": "/a"})
    for n in range(7):
        server.routes[f"/hop{n}"] = lambda _, n=n: Reply(307, {"Location": f"/hop{n + 1}"})
    with OutboundClient(OPEN) as client:
        with pytest.raises(OutboundRefused, match="redirect loop"):
            client.request("GET", server.url("/a"), max_redirects=5)
        with pytest.raises(OutboundRefused, match="more than 5 redirects"):
            client.request("GET", server.url("/hop0"), max_redirects=5)
    assert sum(path.startswith("/hop") for path, _ in server.requests) == 6


def test_a_body_that_never_ends_is_cut_at_the_cap(server):
    server.routes["/endless"] = lambda _: Reply(200, {"Content-Type": "text/xml"}, itertools.repeat(b"x" * 8192))
    with OutboundClient(OutboundPolicy(allow_private_networks=True, max_body_bytes=100_000)) as client:
        with pytest.raises(OutboundError, match="larger than 100000 bytes"):
            client.request("GET", server.url("/endless"))


def test_a_server_that_stalls_times_out(server):
    def stall(_):
        time.sleep(3)
        return Reply(200, body=b"late")

    server.routes["/stall"] = stall
    started = time.monotonic()
    with OutboundClient(OutboundPolicy(allow_private_networks=True, total_timeout_s=0.5)) as client:
        with pytest.raises(OutboundError, match="timed out"):
            client.request("GET", server.url("/stall"))
    assert time.monotonic() - started < 2.5


@pytest.mark.parametrize(("encoding", "compress"), [("gzip", gzip.compress), ("br", brotli.compress)])
def test_compressed_bodies_are_decoded_and_capped_after_decoding(server, encoding, compress):
    plain = b"<rss>" + b"a" * 50_000 + b"</rss>"
    server.routes["/feed"] = lambda _: Reply(200, {"Content-Encoding": encoding}, compress(plain))
    with OutboundClient(OPEN) as client:
        assert client.request("GET", server.url("/feed"))[1] == plain
    with OutboundClient(OutboundPolicy(allow_private_networks=True, max_body_bytes=10_000)) as client:
        with pytest.raises(OutboundError, match="larger than"):
            client.request("GET", server.url("/feed"))


def test_a_refusal_names_the_host_never_the_url_and_its_token(server):
    with OutboundClient(OutboundPolicy()) as client, pytest.raises(OutboundRefused) as refused:
        client.request("POST", server.url("/hook?token=s3cr3t"), content=b"{}")
    assert "s3cr3t" not in str(refused.value) and "\n" not in str(refused.value)


# A child process facing one decompression bomb: it prints how much its peak RSS grew (KiB) and the error.
BOMB_CHILD = """
import gzip, resource, sys, zlib
import brotli
from observatory_assets.lib.feed_server import FeedServer, Reply
from resources.http_headers import retry_after_moment, retry_after_seconds
from resources.outbound import OutboundClient, OutboundError, OutboundPolicy

encoding, cap = sys.argv[1], int(sys.argv[2])
if encoding == "br":
    packer = brotli.Compressor(quality=5)
    bomb = b"".join(packer.process(bytes(1 << 20)) for _ in range(256)) + packer.finish()
else:
    packer = zlib.compressobj(6, zlib.DEFLATED, 31)
    bomb = b"".join(packer.compress(bytes(1 << 20)) for _ in range(256)) + packer.flush()
with FeedServer() as server, OutboundClient(OutboundPolicy(allow_private_networks=True, max_body_bytes=cap)) as client:
    small = brotli.compress(b"<rss/>") if encoding == "br" else gzip.compress(b"<rss/>")
    server.routes["/small"] = lambda _: Reply(200, {"Content-Encoding": encoding}, small)
    server.routes["/bomb"] = lambda _: Reply(200, {"Content-Encoding": encoding}, bomb)
    assert client.request("GET", server.url("/small"))[1] == b"<rss/>"
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        client.request("GET", server.url("/bomb"))
        error = "none"
    except OutboundError as failure:
        error = str(failure)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before, error)
"""


@pytest.mark.parametrize("encoding", ["br", "gzip"])
def test_a_decompression_bomb_is_stopped_one_step_past_the_cap_in_memory(encoding):
    cap = 8 * 1024**2
    done = subprocess.run(
        [sys.executable, "-c", BOMB_CHILD, encoding, str(cap)], capture_output=True, text=True, timeout=300, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr[-2000:]
    grown_kib, error = done.stdout.strip().split(" ", 1)
    assert "larger than" in error
    assert int(grown_kib) * 1024 < cap + 40 * 1024**2  # 256 MiB decoded at once before


@pytest.mark.parametrize("encoding", ["gzip, gzip", "zstd", "compress"])
def test_stacked_or_unknown_encodings_are_refused_and_the_accepted_ones_are_named(server, encoding):
    body = gzip.compress(gzip.compress(b"<rss/>")) if encoding == "gzip, gzip" else b"<rss/>"
    server.routes["/feed"] = lambda _: Reply(200, {"Content-Encoding": encoding}, body)
    with OutboundClient(OPEN) as client, pytest.raises(OutboundError, match="content encoding"):
        client.request("GET", server.url("/feed"))
    assert server.requests[0][1]["Accept-Encoding"] == "gzip, deflate, br"


def test_deflate_bodies_zlib_wrapped_or_raw_are_decoded(server):
    plain = b"<rss>" + b"d" * 200_000 + b"</rss>"
    raw = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    server.routes["/zlib"] = lambda _: Reply(200, {"Content-Encoding": "deflate"}, zlib.compress(plain))
    server.routes["/raw"] = lambda _: Reply(200, {"Content-Encoding": "deflate"}, raw.compress(plain) + raw.flush())
    with OutboundClient(OPEN) as client:
        assert client.request("GET", server.url("/zlib"))[1] == plain
        assert client.request("GET", server.url("/raw"))[1] == plain


def _drip(chunks: int, every_s: float):
    for _ in range(chunks):
        yield b"x"
        time.sleep(every_s)


def test_a_body_dripping_a_byte_at_a_time_is_cut_at_the_deadline(server):
    server.routes["/drip"] = lambda _: Reply(200, {"Content-Type": "text/xml"}, _drip(60, 0.5))  # 30 s in all
    started = time.monotonic()
    with OutboundClient(OutboundPolicy(allow_private_networks=True, total_timeout_s=2)) as client:
        with pytest.raises(OutboundError, match="timed out"):
            client.request("GET", server.url("/drip"))
    assert time.monotonic() - started < 15  # every read waited its own timeout before: 30 s


@pytest.fixture
def header_dripper():
    """A raw TCP server that sends a status line, then one header byte every 0.5 s for 30 s."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve():
        connection, _ = listener.accept()
        with connection:
            connection.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
            for _ in range(60):
                if stop.wait(0.5):
                    return
                try:
                    connection.sendall(b"a")
                except OSError:
                    return

    threading.Thread(target=serve, daemon=True).start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/"
    stop.set()
    listener.close()


def test_headers_dripping_a_byte_at_a_time_are_cut_at_the_deadline(header_dripper):
    started = time.monotonic()
    with OutboundClient(OutboundPolicy(allow_private_networks=True, total_timeout_s=2)) as client:
        with pytest.raises(OutboundError, match="timed out"):
            client.request("GET", header_dripper)
    assert time.monotonic() - started < 15


def _connection_log(server) -> list[tuple[int, str]]:
    seen: list[tuple[int, str]] = []

    def answer(handler):
        seen.append((handler.client_address[1], handler.headers["Host"]))
        return Reply(200, body=b"ok")

    server.routes["/"] = answer
    return seen


def test_kept_alive_connections_are_keyed_by_host_name_not_by_address(server, names):
    seen = _connection_log(server)
    port = server.base_url.rsplit(":", 1)[1]
    with OutboundClient(OPEN) as client:
        for name in ("one.test", "one.test", "two.test"):
            assert client.request("GET", f"http://{name}:{port}/")[1] == b"ok"
    (first, host1), (again, host2), (other, host3) = seen
    assert (host1, host2, host3) == (f"one.test:{port}", f"one.test:{port}", f"two.test:{port}")
    assert first == again  # kept alive for the same name
    assert other != first  # never lent to another name on the same address


def test_an_international_name_is_resolved_checked_and_sent_in_one_form(server, names):
    seen = _connection_log(server)
    port = server.base_url.rsplit(":", 1)[1]
    with OutboundClient(OPEN) as client:
        assert client.request("GET", f"http://faß.test:{port}/")[1] == b"ok"
    assert names == ["xn--fa-hia.test"] and seen[0][1] == f"xn--fa-hia.test:{port}"  # IDNA 2008, not "fass"


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("120", 120.0),
        ("999999", 24 * 3600.0),  # capped
        ("Thu, 01 Jan 2026 00:01:00 GMT", 60.0),
        ("Thu, 01 Jan 2026 02:01:00 +0200", 60.0),  # any zone
        ("Thu, 01 Jan 2026 00:01:00 -0000", 60.0),  # UTC, local zone unknown (RFC 5322)
        ("Wed, 21 Oct 2015 07:28:00 -0000", 0.0),  # in the past: now
        ("Fri, 31 Dec 9999 23:59:59 GMT", 24 * 3600.0),  # never blocks for ever
        ("Thu, 01 Jan 2026 00:01:00", None),  # a naive date: no zone, no meaning
        ("²", None),  # a digit to str.isdigit, not to int()
        ("-5", None),
        ("soon", None),
        ("", None),
        (None, None),
    ],
)
def test_one_retry_after_parser_bounds_every_value_and_never_raises(value, seconds):
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert retry_after_seconds(value, now) == seconds
    moment = retry_after_moment(value, now)
    assert moment == (None if seconds is None else now + timedelta(seconds=seconds))
