"""Decoding a compressed HTTP body in bounded steps, so a small body can never become a huge one at once.

A server chooses the ``Content-Encoding``; 405 bytes of brotli can expand to 256 MiB. Each decoder here
turns one piece of the raw body into decoded pieces of at most :data:`STEP_BYTES` each (zlib's
``max_length`` with ``unconsumed_tail``, brotli's ``output_buffer_limit``), so whoever counts the decoded
bytes stops a bomb after one step past its cap. One coding per body: a stacked ``gzip, gzip`` or an
unknown coding is refused (:class:`UnsupportedEncoding`), never decoded.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator

import brotli

#: The most decoded bytes one step of a decoder produces.
STEP_BYTES = 64 * 1024
#: What a client that decodes here accepts, in ``Accept-Encoding``.
ACCEPTED_ENCODINGS = "gzip, deflate, br"


#: What a decoder raises for a body that is not what its encoding says.
DECODING_ERRORS = (zlib.error, brotli.error)


class UnsupportedEncoding(ValueError):
    """A ``Content-Encoding`` the client does not decode (stacked, or unknown)."""


class _Identity:
    def feed(self, data: bytes) -> Iterator[bytes]:
        yield data


class _Zlib:
    """gzip, or deflate (zlib-wrapped as the RFC says, or raw as some servers send it)."""

    def __init__(self, wbits: int, raw_fallback: bool = False):
        self._inflate = zlib.decompressobj(wbits)
        self._raw_fallback = raw_fallback
        self._started = False

    def feed(self, data: bytes) -> Iterator[bytes]:
        pending = data
        while not self._inflate.eof:
            try:
                out = self._inflate.decompress(pending, STEP_BYTES)
            except zlib.error:
                if not self._raw_fallback or self._started:
                    raise
                self._raw_fallback = False
                self._inflate = zlib.decompressobj(-zlib.MAX_WBITS)
                continue
            self._started = True
            if out:
                yield out
            pending = self._inflate.unconsumed_tail
            if not pending and len(out) < STEP_BYTES:  # a full step may leave output pending: ask again
                return


class _Brotli:
    def __init__(self):
        self._decompressor = brotli.Decompressor()

    def feed(self, data: bytes) -> Iterator[bytes]:
        out = self._decompressor.process(data, output_buffer_limit=STEP_BYTES)
        while True:
            if out:
                yield out
            if self._decompressor.is_finished() or self._decompressor.can_accept_more_data():
                return
            out = self._decompressor.process(b"", output_buffer_limit=STEP_BYTES)


def decoder_for(content_encoding: list[str]):
    """The bounded decoder for a response's ``Content-Encoding`` values (a list, split at commas)."""
    codings = [coding.strip().lower() for coding in content_encoding if coding.strip().lower() not in ("", "identity")]
    if len(codings) > 1:
        raise UnsupportedEncoding(f"stacked content encodings ({', '.join(codings)}) are refused")
    coding = codings[0] if codings else "identity"
    if coding == "identity":
        return _Identity()
    if coding in ("gzip", "x-gzip"):
        return _Zlib(zlib.MAX_WBITS | 16)
    if coding == "deflate":
        return _Zlib(zlib.MAX_WBITS, raw_fallback=True)
    if coding == "br":
        return _Brotli()
    raise UnsupportedEncoding(f"content encoding {coding[:40]!r} is not supported")
