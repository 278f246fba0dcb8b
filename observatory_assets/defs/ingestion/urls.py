"""Canonical URLs: one spelling per http(s) address, so the same link deduplicates and joins."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

_TRACKING_PARAMS = re.compile(r"^(utm_[a-z]+|fbclid|gclid|dclid|msclkid|mc_cid|mc_eid|igshid|ref_src)$", re.I)
#: An http(s) URL whose canonical form needs no parsing library: plain host, no port, no user info,
#: a query of unreserved characters only (anything else takes urllib's general path).
_PLAIN_URL = re.compile(r"(?i:(https?)://)([A-Za-z0-9._-]+)(/[^?#\s]*)?(?:\?([A-Za-z0-9._~=&-]*))?(?:#.*)?", re.S)
_PLAIN_PARAM = re.compile(r"([A-Za-z0-9._~-]*)(?:=([A-Za-z0-9._~-]*))?")


def normalize_url(url: Any) -> str | None:
    """Canonical form of an http(s) URL: lower-case scheme and host, no default port,
    no fragment, tracking parameters removed, query sorted. None when not an http(s) URL."""
    if not isinstance(url, str):
        return None
    url = url.strip()
    plain = plain_url(url)
    return plain if plain is not None else parsed_url(url)


def parsed_url(url: str) -> str | None:
    """normalize_url for any URL, through urllib."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        return None
    host = parts.hostname.lower()
    if port and not ((scheme == "http" and port == 80) or (scheme == "https" and port == 443)):
        host = f"{host}:{port}"
    query = sorted((k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if not _TRACKING_PARAMS.match(k))
    return urlunsplit((scheme, host, parts.path or "/", urlencode(query), ""))


def plain_url(url: str) -> str | None:
    """normalize_url's result without urllib for the common URL shape, or None to take the general path.

    The shape is chosen so that urllib's splitting, unquoting and re-quoting are all the identity.
    """
    match = _PLAIN_URL.fullmatch(url)
    if match is None:
        return None
    scheme, host, path, query = match.groups()
    params = []
    for part in query.split("&") if query else ():
        if not part:
            continue
        param = _PLAIN_PARAM.fullmatch(part)
        if param is None:
            return None
        name, value = param.groups()
        if value is None and "=" in part:
            return None
        if not _TRACKING_PARAMS.match(name):
            params.append((name, value or ""))
    params.sort()
    canonical = f"{scheme.lower()}://{host.lower()}{path or '/'}"
    return canonical + "?" + "&".join(f"{k}={v}" for k, v in params) if params else canonical
