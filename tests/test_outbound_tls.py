"""The guarded client's TLS against a real HTTPS server on loopback, with certificates from a throwaway CA
(``trustme``): a kept-alive connection verified for one host name never carries a request for another
name on the same address, and an international name is verified in the IDNA form it is resolved and sent
in. The names are pointed at 127.0.0.1 by the ``names`` fixture (DNS, not the client: the client is the real
one)."""

from __future__ import annotations

import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import trustme

from resources.outbound import OutboundClient, OutboundError, OutboundPolicy

#: The name the server's certificate is valid for, another name of the same address, and an IDNA one.
CERTIFIED, OTHER, INTERNATIONAL = "feeds.test", "other.test", "faß.test"


class TLSServer:
    """An HTTPS server on 127.0.0.1 (HTTP/1.1, kept alive) presenting ``certificate``; records for each
    request the client's port (one per connection) and the ``Host`` it named."""

    def __init__(self, certificate: trustme.LeafCert):
        self.requests: list[tuple[int, str]] = []
        served = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):  # noqa: N802 (http.server's name)
                served.requests.append((self.client_address[1], self.headers["Host"]))
                self.send_response(200)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format, *args):  # noqa: A002
                pass

        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        certificate.configure_cert(context)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        # the handshake happens at accept; one the client rejects is an OSError the server drops
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_port
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join()


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


def trusting(ca: trustme.CA) -> OutboundPolicy:
    """A policy for loopback whose TLS trusts ``ca`` (and verifies host names as always)."""
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return OutboundPolicy(allow_private_networks=True, total_timeout_s=10, ssl_context=context)


def test_a_connection_verified_for_one_name_never_carries_a_request_for_another(ca, names):
    server = TLSServer(ca.issue_cert(CERTIFIED))
    try:
        with OutboundClient(trusting(ca)) as client:
            for _ in range(2):
                response, body = client.request("GET", f"https://{CERTIFIED}:{server.port}/feed")
                assert (response.status_code, body) == (200, b"ok")
            with pytest.raises(OutboundError, match=f"{OTHER}: ConnectError"):  # the certificate is not its
                client.request("GET", f"https://{OTHER}:{server.port}/feed")
    finally:
        server.close()
    (first, host), (again, _) = server.requests
    assert first == again and host == f"{CERTIFIED}:{server.port}"  # the verified connection was kept alive
    assert names == [CERTIFIED, OTHER]  # the other name had to connect (and verify) on its own


def test_an_international_name_is_verified_in_the_form_it_is_resolved_and_sent_in(ca, names):
    idna = "xn--fa-hia.test"  # IDNA 2008: "ß" kept, not mapped to "ss" as IDNA 2003 would
    server = TLSServer(ca.issue_cert(idna))
    try:
        with OutboundClient(trusting(ca)) as client:
            response, _ = client.request("GET", f"https://{INTERNATIONAL}:{server.port}/feed")
            assert response.status_code == 200
            with pytest.raises(OutboundError, match="ConnectError"):  # verified by name: not "fass"
                client.request("GET", f"https://fass.test:{server.port}/feed")
    finally:
        server.close()
    assert names == [idna, "fass.test"] and server.requests[0][1] == f"{idna}:{server.port}"
