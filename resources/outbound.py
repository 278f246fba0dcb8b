"""The one way Observatory sends an HTTP request to the outside world, guarded against SSRF.

Every outbound request (feed polling, webhooks, URL collection) goes through
:class:`OutboundClient`:

- only ``http`` and ``https`` URLs;
- the host is resolved first and every address it resolves to must be public
  (no loopback, private, link-local, multicast, reserved or unspecified address);
  the connection then goes to the very address that was checked, so a DNS answer
  that changes between the check and the connect (rebinding) cannot slip through.
  The name resolved, checked, sent in ``Host`` and verified by TLS is one and the same
  (an international name in its IDNA form), and kept-alive connections are pooled by
  that name, never by address: a connection opened for one name never carries a
  request for another name on the same address;
- redirects are followed by hand, one hop at a time, each hop checked again
  (``max_redirects=0``, the default, returns a 3xx as it is);
- one deadline for the whole exchange, from the connect through the headers to the
  last body byte (every socket operation waits at most until it: a server dripping
  a byte at a time is cut at the deadline);
- bodies streamed raw and decoded here in bounded steps (:mod:`resources.decoding`:
  one coding of gzip, deflate or brotli, as ``Accept-Encoding`` says), with a cap on
  the raw and on the decoded bytes, so a decompression bomb stops one step past the
  cap; and a User-Agent naming the project, its version and a contact URL.

``OBSERVATORY_ALLOW_PRIVATE_NETWORKS=1`` lifts the address rule (tests on
loopback, deployments on a private network). Every failure is an
:class:`OutboundError` whose message is one line naming the host, never the full
URL (a URL may carry a token).
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from http.cookiejar import CookieJar, DefaultCookiePolicy
from importlib import metadata

import httpcore
import httpx

from resources.decoding import ACCEPTED_ENCODINGS, DECODING_ERRORS, UnsupportedEncoding, decoder_for
from resources.settings import platform_settings

ALLOWED_SCHEMES = ("http", "https")
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
PERMANENT_REDIRECT_STATUSES = frozenset({301, 308})
DEFAULT_CONNECT_TIMEOUT_S = 10.0
DEFAULT_TOTAL_TIMEOUT_S = 30.0
#: The most of an answer a caller that only needs the status reads (a webhook receiver's acknowledgement).
SMALL_ANSWER_BYTES = 4096
KEEPALIVE_EXPIRY_S = 5.0

#: The deadline (``time.monotonic()``) of the exchange this thread is in; every socket operation obeys it.
_DEADLINE: ContextVar[float | None] = ContextVar("outbound_deadline", default=None)


class OutboundError(Exception):
    """An outbound request that failed or was stopped; the message is one line, free of secrets.

    ``requests_sent`` counts the requests that left before it failed (0: nothing was sent), which is
    what a quota charges."""

    requests_sent: int = 0


class OutboundRefused(OutboundError, ValueError):
    """A request the guard will not send (scheme, address, redirect policy): nothing was fetched."""


@dataclass(frozen=True)
class Redirect:
    """One redirect hop that was followed."""

    status: int
    source: str
    target: str

    @property
    def permanent(self) -> bool:
        return self.status in PERMANENT_REDIRECT_STATUSES


@dataclass(frozen=True)
class OutboundPolicy:
    """What every outbound request obeys; :meth:`from_settings` reads the ``OBSERVATORY_*`` variables."""

    allow_private_networks: bool = False
    user_agent: str = "Observatory"
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S
    total_timeout_s: float = DEFAULT_TOTAL_TIMEOUT_S
    max_body_bytes: int = 15 * 1024**2
    #: Networks reachable even with private networks refused, e.g. ``("10.1.0.0/16",)`` for one internal service.
    allowed_networks: tuple[str, ...] = ()
    #: The TLS context that verifies servers (None: the system's certificate authorities), e.g. one that
    #: trusts a private CA: ``ssl.create_default_context(cafile=...)``, which checks the request's host name.
    ssl_context: ssl.SSLContext | None = None

    @classmethod
    def from_settings(cls, **overrides) -> OutboundPolicy:
        settings = platform_settings()
        values = {
            "allow_private_networks": settings.allow_private_networks,
            "user_agent": user_agent(settings.contact_url or settings.site_url),
            "max_body_bytes": settings.fetch_max_bytes,
        }
        return cls(**{**values, **overrides})


def user_agent(contact_url: str) -> str:
    """``Observatory/<version> (+<contact URL>)``: who is asking, and where to complain."""
    try:
        version = metadata.version("observatory")
    except metadata.PackageNotFoundError:
        version = "dev"
    return f"Observatory/{version} (media monitoring; +{contact_url})"


def checked_url(url: str | httpx.URL) -> httpx.URL:
    """``url`` parsed, if it is an absolute http(s) URL with a host; else :class:`OutboundRefused`."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        raise OutboundRefused("not a valid URL") from None
    if parsed.scheme not in ALLOWED_SCHEMES:
        raise OutboundRefused(f"only http(s) URLs are fetched, not {parsed.scheme or 'a relative URL'!r}")
    if not parsed.host:
        raise OutboundRefused("the URL has no host")
    return parsed


def address_refusal(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why ``address`` is not a public destination (``'loopback'``, ``'private'``...), or None if it is."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    checks = (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("private", address.is_private),
        ("reserved", address.is_reserved),
    )
    for label, refused in checks:
        if refused:
            return label
    return None if address.is_global else "non-public"


def resolve_checked(host: str, port: int, policy: OutboundPolicy) -> str:
    """The address to connect to for ``host``: every address it resolves to must pass the guard."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as error:
        raise OutboundError(f"cannot resolve {host}: {getattr(error, 'strerror', None) or error}") from None
    addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos))
    if not policy.allow_private_networks:
        allowed = [ipaddress.ip_network(network) for network in policy.allowed_networks]
        for address in addresses:
            refusal = None if any(address in network for network in allowed) else address_refusal(address)
            if refusal is not None:
                raise OutboundRefused(
                    f"{host} resolves to a {refusal} address ({address}); "
                    "OBSERVATORY_ALLOW_PRIVATE_NETWORKS=1 allows private networks"
                )
    return str(addresses[0])


def _within_deadline(timeout: float | None, expired: type[Exception]) -> float | None:
    """``timeout`` shortened to what is left of this exchange's deadline; ``expired`` once it has passed."""
    deadline = _DEADLINE.get()
    if deadline is None:
        return timeout
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise expired("the deadline of the exchange has passed")
    return remaining if timeout is None else min(timeout, remaining)


class _DeadlineStream(httpcore.NetworkStream):
    """A connection whose every read, write and TLS handshake ends by the exchange's deadline."""

    def __init__(self, stream: httpcore.NetworkStream):
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, _within_deadline(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, _within_deadline(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(self, ssl_context, server_hostname: str | None = None, timeout: float | None = None):
        timeout = _within_deadline(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._stream.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str):
        return self._stream.get_extra_info(info)


class _GuardedBackend(httpcore.NetworkBackend):
    """Connections for the pool: the host name (IDNA form, as sent in ``Host``) is resolved and checked
    here, and the socket goes to the checked address; the pool itself knows connections by name."""

    def __init__(self, policy: OutboundPolicy):
        self._policy = policy
        self._sockets = httpcore.SyncBackend()

    def connect_tcp(self, host: str, port: int, timeout=None, local_address=None, socket_options=None):
        address = resolve_checked(host, port, self._policy)
        timeout = _within_deadline(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._sockets.connect_tcp(address, port, timeout, local_address, socket_options))

    def connect_unix_socket(self, path: str, timeout=None, socket_options=None):
        raise OutboundRefused("Unix sockets are not an outbound destination")

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class _PoolPerHost:
    """One connection pool per origin (scheme, host name, port): requests to different hosts never wait on
    one another's pool, and a connection is only ever reused for the very name it was opened for."""

    def __init__(self, policy: OutboundPolicy, max_connections: int):
        self._policy = policy
        self._max_connections = max_connections
        self._ssl_context = policy.ssl_context or httpx.create_ssl_context(trust_env=False)
        self._pools: dict[tuple[bytes, bytes, int | None], httpcore.ConnectionPool] = {}
        self._lock = threading.Lock()

    def _pool_for(self, url: httpcore.URL) -> httpcore.ConnectionPool:
        origin = (url.scheme, url.host, url.port)
        with self._lock:
            pool = self._pools.get(origin)
            if pool is None:
                pool = self._pools[origin] = httpcore.ConnectionPool(
                    ssl_context=self._ssl_context,
                    max_connections=self._max_connections,
                    max_keepalive_connections=self._max_connections,
                    keepalive_expiry=KEEPALIVE_EXPIRY_S,
                    network_backend=_GuardedBackend(self._policy),
                )
            return pool

    def handle_request(self, request: httpcore.Request) -> httpcore.Response:
        return self._pool_for(request.url).handle_request(request)

    def close(self) -> None:
        with self._lock:
            pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            pool.close()


def _guarded_transport(policy: OutboundPolicy, max_connections: int) -> httpx.HTTPTransport:
    """httpx's transport over pools (one per host) whose connections come from :class:`_GuardedBackend`."""
    transport = httpx.HTTPTransport(trust_env=False)
    transport._pool = _PoolPerHost(policy, max_connections)  # httpx has no parameter for the pool
    return transport


@dataclass
class OutboundResponse:
    """The final response of an exchange: status, headers, where it ended and how it got there.

    The body is read with :meth:`iter_bytes` or :meth:`read` (decoded in bounded steps and capped), or
    its first bytes only with :meth:`read_head`.
    """

    status_code: int
    headers: httpx.Headers
    url: str
    redirects: list[Redirect]
    _response: httpx.Response = field(repr=False)
    _max_body_bytes: int = field(repr=False)
    _host: str = field(repr=False)

    @property
    def permanent_url(self) -> str | None:
        """The URL reached through permanent redirects (301/308) only, from the first hop on; None if the
        first hop was not permanent. A feed reader stores this URL in place of the one it asked for."""
        moved = None
        for redirect in self.redirects:
            if not redirect.permanent:
                break
            moved = redirect.target
        return moved

    def iter_bytes(self) -> Iterator[bytes]:
        """The decoded body in steps of at most 64 KiB; :class:`OutboundError` once the raw or the decoded
        bytes pass the cap, the deadline passes, or the body's encoding is refused or corrupt."""
        cap = self._max_body_bytes
        try:
            decoder = decoder_for(self.headers.get_list("content-encoding", split_commas=True))
        except UnsupportedEncoding as error:
            raise self._sent(OutboundError(f"{self._host}: {error}")) from None
        raw = decoded = 0
        try:
            for chunk in self._response.iter_raw():
                raw += len(chunk)
                if raw > cap:
                    raise self._sent(OutboundError(f"{self._host}: body larger than {cap} bytes as sent"))
                for piece in decoder.feed(chunk):
                    decoded += len(piece)
                    if decoded > cap:
                        raise self._sent(OutboundError(f"{self._host}: body larger than {cap} bytes"))
                    yield piece
        except httpx.HTTPError as error:
            raise self._sent(_as_outbound_error(error, self._host)) from None
        except DECODING_ERRORS:
            raise self._sent(OutboundError(f"{self._host}: the body could not be decoded")) from None

    def read_head(self, limit: int = SMALL_ANSWER_BYTES) -> bytes:
        """At most ``limit`` bytes of the body as sent, never decoded, the rest left unread: for a caller
        that needs the status only (a webhook receiver's acknowledgement)."""
        head = b""
        try:
            for chunk in self._response.iter_raw():
                head += chunk[: limit - len(head)]
                if len(head) >= limit:
                    break
        except httpx.HTTPError as error:
            raise self._sent(_as_outbound_error(error, self._host)) from None
        return head

    def _sent(self, error: OutboundError) -> OutboundError:
        error.requests_sent = len(self.redirects) + 1
        return error

    def read(self) -> bytes:
        return b"".join(self.iter_bytes())


def _as_outbound_error(error: httpx.HTTPError, host: str) -> OutboundError:
    if isinstance(error, httpx.TimeoutException):
        return OutboundError(f"{host}: timed out ({type(error).__name__})")
    return OutboundError(f"{host}: {type(error).__name__}")


@dataclass
class _Exchange:
    """The hops of one exchange so far: redirects followed and requests sent."""

    redirects: list[Redirect] = field(default_factory=list)
    sent: int = 0


class OutboundClient:
    """A pooled, guarded HTTP client (at most ``max_connections`` per host); thread-safe, use one per process
    or per cycle and close it."""

    def __init__(self, policy: OutboundPolicy | None = None, *, max_connections: int = 100):
        self.policy = policy or OutboundPolicy.from_settings()
        self._http = httpx.Client(
            follow_redirects=False,
            trust_env=False,
            cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
            headers={"User-Agent": self.policy.user_agent, "Accept-Encoding": ACCEPTED_ENCODINGS},
            transport=_guarded_transport(self.policy, max_connections),
            timeout=httpx.Timeout(self.policy.total_timeout_s, connect=self.policy.connect_timeout_s),
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> OutboundClient:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    @contextmanager
    def stream(
        self,
        method: str,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        content: bytes | None = None,
        max_redirects: int = 0,
        timeout_s: float | None = None,
    ) -> Iterator[OutboundResponse]:
        """Send ``method url``, follow at most ``max_redirects`` redirects (each hop re-checked) and yield
        the final response with its body still unread. A 3xx past the allowed hops is an error, except
        with ``max_redirects=0``, where the 3xx itself is the answer. The deadline (``timeout_s``, else the
        policy's) holds for every hop and the body, read inside the ``with`` block."""
        deadline = time.monotonic() + (timeout_s or self.policy.total_timeout_s)
        exchange = _Exchange()
        token = _DEADLINE.set(deadline)
        try:
            try:
                response, target = self._follow(method, url, headers, content, deadline, max_redirects, exchange)
            except OutboundError as error:
                error.requests_sent = exchange.sent
                raise
            try:
                yield OutboundResponse(
                    status_code=response.status_code,
                    headers=response.headers,
                    url=str(target),
                    redirects=exchange.redirects,
                    _response=response,
                    _max_body_bytes=self.policy.max_body_bytes,
                    _host=target.host,
                )
            finally:
                response.close()
        finally:
            _DEADLINE.reset(token)

    def _follow(
        self,
        method: str,
        url: str,
        headers: dict[str, str] | None,
        content: bytes | None,
        deadline: float,
        max_redirects: int,
        exchange: _Exchange,
    ) -> tuple[httpx.Response, httpx.URL]:
        """Send and follow redirects by hand, each hop checked; ``exchange`` records the hops and requests."""
        redirects = exchange.redirects
        target = checked_url(url)
        visited = {str(target)}
        while True:
            response = self._send_one(method, target, headers, content, deadline, exchange)
            location = response.headers.get("location")
            if max_redirects == 0 or response.status_code not in REDIRECT_STATUSES or not location:
                break
            response.close()
            if len(redirects) >= max_redirects:
                raise OutboundRefused(f"{target.host}: more than {max_redirects} redirects")
            try:
                following = checked_url(target.join(location))
            except httpx.InvalidURL:
                raise OutboundRefused(f"{target.host}: redirect to an invalid URL") from None
            if str(following) in visited:
                raise OutboundRefused(f"{target.host}: redirect loop")
            visited.add(str(following))
            redirects.append(Redirect(response.status_code, str(target), str(following)))
            if response.status_code == 303 or (response.status_code in (301, 302) and method == "POST"):
                method, content = "GET", None
            target = following
        return response, target

    def request(self, method: str, url: str, **options) -> tuple[OutboundResponse, bytes]:
        """:meth:`stream` with the body read (capped): for small answers such as webhook acknowledgements."""
        with self.stream(method, url, **options) as response:
            return response, response.read()

    def _send_one(
        self,
        method: str,
        target: httpx.URL,
        headers: dict[str, str] | None,
        content: bytes | None,
        deadline: float,
        exchange: _Exchange,
    ) -> httpx.Response:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise OutboundError(f"{target.host}: timed out")
        request = self._http.build_request(
            method,
            target,  # by name: the pool's connection is resolved, checked and verified for this very name
            headers=headers,
            content=content,
            timeout=httpx.Timeout(remaining, connect=min(self.policy.connect_timeout_s, remaining)),
        )
        try:
            response = self._http.send(request, stream=True)
        except httpx.HTTPError as error:
            exchange.sent += 1
            raise _as_outbound_error(error, target.host) from None
        exchange.sent += 1  # a refusal or a name that does not resolve (OutboundError) sent nothing
        return response
