"""The guarded outbound client against real HTTP servers on loopback."""

from __future__ import annotations

import gzip
import itertools
import time

import brotli
import pytest

from observatory_assets.lib.feed_server import Document, FeedServer, Reply
from resources.outbound import OutboundClient, OutboundError, OutboundPolicy, OutboundRefused

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
