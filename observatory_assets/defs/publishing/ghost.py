"""Ghost Admin API client used by the publisher to keep one Ghost post per publish record.

Business rules it encodes (see issue 10 and shared/notes/ghost-local.md):

- Authentication: the admin key is ``id:hexsecret``. Every request carries a *fresh* JWT (HS256,
  header ``kid`` = id, ``aud`` = ``/admin/``, expiry 5 minutes) as ``Authorization: Ghost <token>``
  and an ``Accept-Version`` header. The key, its secret and tokens never appear in errors or logs.
- Content: HTML is sent with ``?source=html`` and wrapped in one HTML card
  (``<!--kg-card-begin: html-->…<!--kg-card-end: html-->``) so Ghost keeps it verbatim instead of
  converting it lossily to Lexical.
- Idempotency: Ghost has no idempotency key and silently renames a taken slug to ``slug-2``. The
  caller looks a post up first (:meth:`GhostClient.find_post`, by deterministic slug and/or by the
  record's internal tag), then creates; :meth:`GhostClient.create_post` checks the slug it got back
  and removes a renamed duplicate.
- Internal tags: a tag whose *name* starts with ``#`` is internal (never shown on the site); Ghost
  gives it the slug ``hash-<slugified rest>``. :func:`internal_tag` builds the name and
  :func:`tag_slug` the slug used in ``filter=tag:<slug>``.
- Edits send the post's current ``updated_at``; a stale one gets HTTP 409 (UpdateCollisionError),
  answered by one re-fetch and one retry. Tags sent on an edit replace the post's tags.
- 429, 5xx, timeouts and connection errors are retried with exponential backoff honouring
  ``Retry-After``, within a bounded number of attempts and seconds; other 4xx fail at once.
"""

from __future__ import annotations

import email.utils
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt

HTML_CARD_BEGIN = "<!--kg-card-begin: html-->"
HTML_CARD_END = "<!--kg-card-end: html-->"
_ALL_STATUSES = "[draft,published,scheduled,sent]"


class GhostError(RuntimeError):
    """A Ghost request failed for good. The message is one line and holds no credentials."""

    def __init__(self, message: str, status: int | None = None, retryable: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.retryable = retryable


@dataclass(frozen=True)
class GhostPost:
    """The parts of a Ghost post the publisher needs to decide between skip, update and create."""

    id: str
    uuid: str
    slug: str
    title: str
    status: str
    updated_at: str
    url: str
    html: str | None = None
    tags: tuple[str, ...] = field(default_factory=tuple)

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> GhostPost:
        return cls(
            id=data["id"],
            uuid=data.get("uuid", ""),
            slug=data["slug"],
            title=data.get("title", ""),
            status=data.get("status", ""),
            updated_at=data["updated_at"],
            url=data.get("url", ""),
            html=data.get("html"),
            tags=tuple(t["name"] for t in data.get("tags") or ()),
        )


def slugify(text: str) -> str:
    """Ghost-compatible slug for ASCII text: lower case, runs of other characters become ``-``."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def internal_tag(key: str) -> str:
    """Name of the internal (hidden) tag marking the post of one publish record, e.g. ``#obs-2024-05-01``."""
    return "#" + slugify(key)


def tag_slug(tag: str) -> str:
    """Slug Ghost gives a tag name: an internal ``#name`` becomes ``hash-name``."""
    return "hash-" + slugify(tag[1:]) if tag.startswith("#") else slugify(tag)


def wrap_html_card(html: str) -> str:
    """Wrap HTML in one Ghost HTML card so ``?source=html`` keeps it as is."""
    if html.lstrip().startswith(HTML_CARD_BEGIN):
        return html
    return f"{HTML_CARD_BEGIN}{html}{HTML_CARD_END}"


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value) if value else None
        return max(0.0, parsed.timestamp() - time.time()) if parsed else None


class GhostClient:
    """Ghost Admin API client: find, create, update, unpublish and delete posts."""

    def __init__(
        self,
        url: str,
        admin_key: str,
        accept_version: str = "v6.0",
        timeout: float = 15.0,
        max_attempts: int = 5,
        max_retry_seconds: float = 60.0,
        backoff: float = 0.5,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        key_id, sep, secret = admin_key.partition(":")
        if not sep or not key_id or not re.fullmatch(r"(?:[0-9a-fA-F]{2})+", secret):
            raise GhostError("Ghost admin key must look like id:hexsecret")
        self._key_id, self._secret = key_id, bytes.fromhex(secret)
        self._redact = [admin_key, secret, key_id]
        self.url = url.rstrip("/")
        self.accept_version = accept_version
        self.max_attempts, self.max_retry_seconds, self.backoff = max_attempts, max_retry_seconds, backoff
        self._sleep = sleep
        self._http = httpx.Client(base_url=f"{self.url}/ghost/api/admin", timeout=timeout, transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> GhostClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:  # never show the key
        return f"GhostClient(url={self.url!r})"

    # -- transport -------------------------------------------------------------------------------

    def _token(self) -> str:
        now = int(time.time())
        return jwt.encode(
            {"iat": now, "exp": now + 5 * 60, "aud": "/admin/"},
            self._secret,
            algorithm="HS256",
            headers={"kid": self._key_id},
        )

    def _clean(self, text: str) -> str:
        for secret in self._redact:
            text = text.replace(secret, "***")
        return " ".join(text.split())[:300]

    def _error(self, method: str, path: str, response: httpx.Response) -> GhostError:
        detail = ""
        try:
            err = response.json()["errors"][0]
            message, context = err.get("message") or "", err.get("context") or ""
            detail = f"{err.get('type', '')}: {message} {context if context != message else ''}"
        except Exception:
            detail = response.reason_phrase
        status = response.status_code
        return GhostError(
            self._clean(f"Ghost {method} {path} failed: HTTP {status} {detail}"),
            status=status,
            retryable=status == 429 or status >= 500,
        )

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        json: dict[str, Any] | None = None,
        retry_unsafe: bool = True,
    ) -> httpx.Response:
        """Send one API call with retries. ``retry_unsafe=False`` retries only 429 (never processed),
        for a POST whose replay could create a second post; the caller resolves the other failures."""
        deadline = time.monotonic() + self.max_retry_seconds
        for attempt in range(1, self.max_attempts + 1):
            wait: float | None = None
            try:
                response = self._http.request(
                    method,
                    path,
                    params=params,
                    json=json,
                    headers={"Authorization": f"Ghost {self._token()}", "Accept-Version": self.accept_version},
                )
            except httpx.TransportError as exc:
                error = GhostError(f"Ghost {method} {path} failed: {type(exc).__name__}", retryable=True)
            else:
                if response.status_code < 400:
                    return response
                error = self._error(method, path, response)
                if not error.retryable:
                    raise error
                wait = _retry_after(response)
            if not retry_unsafe and error.status != 429:
                raise error
            delay = wait if wait is not None else self.backoff * 2 ** (attempt - 1)
            if attempt == self.max_attempts or time.monotonic() + delay > deadline:
                raise GhostError(f"{error} (gave up after {attempt} attempts)", error.status, True)
            self._sleep(delay)
        raise AssertionError("unreachable")

    # -- posts -----------------------------------------------------------------------------------

    def get_post(self, post_id: str, formats: str | None = None) -> GhostPost | None:
        """The post with this id, or None if it does not exist (any status)."""
        try:
            r = self._request("GET", f"/posts/{post_id}/", params={"formats": formats} if formats else None)
        except GhostError as exc:
            if exc.status == 404:
                return None
            raise
        return GhostPost.from_api(r.json()["posts"][0])

    def find_posts(self, tag: str) -> list[GhostPost]:
        """Every post (drafts included) carrying ``tag`` (a name such as ``#obs-x`` or a slug), oldest first."""
        slug = tag_slug(tag) if tag.startswith("#") else tag
        r = self._request(
            "GET",
            "/posts/",
            params={
                "filter": f"tag:{slug}+status:{_ALL_STATUSES}",
                "limit": "all",
                "order": "created_at asc",
                "include": "tags",
            },
        )
        return [GhostPost.from_api(p) for p in r.json()["posts"]]

    def find_post(self, slug: str | None = None, tag: str | None = None) -> GhostPost | None:
        """The existing post of a record, looked up by its deterministic slug, then by its internal tag.
        Drafts are found too. None means "not published yet": the caller may create it."""
        if slug is not None:
            try:
                r = self._request("GET", f"/posts/slug/{slug}/", params={"include": "tags"})
                return GhostPost.from_api(r.json()["posts"][0])
            except GhostError as exc:
                if exc.status != 404:
                    raise
        if tag is not None:
            posts = self.find_posts(tag)
            return posts[0] if posts else None
        return None

    @staticmethod
    def _body(fields: dict[str, Any]) -> dict[str, Any]:
        post = dict(fields)
        if post.get("html") is not None:
            post["html"] = wrap_html_card(post["html"])
        if post.get("tags") is not None:
            post["tags"] = [{"name": t} if isinstance(t, str) else t for t in post["tags"]]
        return {"posts": [post]}

    def create_post(
        self,
        title: str,
        html: str,
        slug: str,
        tags: list[str],
        status: str = "published",
    ) -> GhostPost:
        """Create the post of a record under exactly ``slug``.

        A lost response (timeout, 5xx) is resolved by looking the slug up before sending again, so a
        replayed POST never makes a second post. If Ghost renamed the slug (it was taken), the
        renamed post is deleted and GhostError is raised: the caller must find the existing post."""
        body = self._body({"title": title, "html": html, "slug": slug, "tags": tags, "status": status})
        for attempt in range(1, self.max_attempts + 1):
            try:
                r = self._request("POST", "/posts/", params={"source": "html"}, json=body, retry_unsafe=False)
                break
            except GhostError as exc:
                if not exc.retryable or attempt == self.max_attempts:
                    raise
                existing = self.find_post(slug=slug)
                if existing is not None:
                    return existing
                self._sleep(self.backoff * 2 ** (attempt - 1))
        post = GhostPost.from_api(r.json()["posts"][0])
        if post.slug != slug:
            self.delete_post(post.id)
            raise GhostError(
                f"Ghost slug {slug!r} is already taken (Ghost renamed the new post to {post.slug!r}; "
                "that duplicate was deleted): look the existing post up and update it instead"
            )
        return post

    def update_post(self, post_id: str, updated_at: str, **fields: Any) -> GhostPost:
        """Edit a post in place (``html``, ``title``, ``tags``, ``status``…). ``updated_at`` is the value
        fetched with the post; on a 409 collision the post is re-fetched once and the edit retried."""
        for attempt in (1, 2):
            body = self._body({**fields, "updated_at": updated_at})
            try:
                r = self._request("PUT", f"/posts/{post_id}/", params={"source": "html"}, json=body)
                return GhostPost.from_api(r.json()["posts"][0])
            except GhostError as exc:
                if exc.status != 409 or attempt == 2:
                    raise
                fresh = self.get_post(post_id)
                if fresh is None:
                    raise GhostError(f"Ghost post {post_id} disappeared during an update", 404) from None
                updated_at = fresh.updated_at
        raise AssertionError("unreachable")

    def set_draft(self, post_id: str) -> GhostPost:
        """Unpublish: the post leaves the site and feeds (it stays reachable by its /p/<uuid>/ preview)."""
        current = self.get_post(post_id)
        if current is None:
            raise GhostError(f"Ghost post {post_id} not found", 404)
        if current.status == "draft":
            return current
        return self.update_post(post_id, current.updated_at, status="draft")

    def delete_post(self, post_id: str) -> bool:
        """Delete a post for good. True if it was deleted now, False if it was already gone (404)."""
        try:
            self._request("DELETE", f"/posts/{post_id}/")
        except GhostError as exc:
            if exc.status == 404:
                return False
            raise
        return True
