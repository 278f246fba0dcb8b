"""The Ghost Admin API client against a real Ghost 6 on 127.0.0.1 (see tests/support/ghost.py).

Without Ghost installed these tests skip with the install command, except under CI=true, where a
missing Ghost fails the run. Only the retry tests use a mock transport: a real Ghost cannot be made
to answer 429/503 on demand.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator

import httpx
import jwt
import pytest

from observatory_assets.defs.publishing.ghost import (
    HTML_CARD_BEGIN,
    GhostClient,
    GhostError,
    internal_tag,
    tag_slug,
)
from tests.support.ghost import GhostServer

SECRET_HEX = "ab" * 32
FAKE_KEY = f"65f0c0ffee0000000000abcd:{SECRET_HEX}"


@pytest.fixture
def client(ghost_server: GhostServer) -> Iterator[GhostClient]:
    with GhostClient(ghost_server.url, ghost_server.admin_key) as c:
        yield c


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def record_traffic(c: GhostClient) -> list[tuple[str, str, int, str]]:
    """(method, path, status, body) of every response the client receives."""
    seen: list[tuple[str, str, int, str]] = []

    def hook(response: httpx.Response) -> None:
        response.read()
        seen.append((response.request.method, response.request.url.path, response.status_code, response.text))

    c._http.event_hooks["response"].append(hook)
    return seen


# -- against the real Ghost ----------------------------------------------------------------------


def test_create_with_source_html_keeps_the_html(client: GhostClient) -> None:
    slug = unique("digest")
    html = '<div class="digest"><h2>Top events</h2><p>Alpha &amp; beta <a href="https://example.org/a">source</a></p></div>'
    post = client.create_post("Digest", html, slug, [internal_tag(slug)])
    assert post.slug == slug and post.status == "published"

    fetched = client.get_post(post.id, formats="html")
    assert fetched is not None and fetched.html
    assert '<div class="digest">' in fetched.html
    assert "<h2>Top events</h2>" in fetched.html
    assert 'href="https://example.org/a"' in fetched.html


def test_find_by_slug_and_by_internal_tag_includes_drafts(client: GhostClient) -> None:
    key = unique("record")
    tag = internal_tag(key)
    assert tag.startswith("#") and tag_slug(tag) == f"hash-{key}"
    draft = client.create_post("Draft digest", "<p>draft</p>", key, [tag], status="draft")
    other = client.create_post("Published digest", "<p>pub</p>", unique("other"), [internal_tag(unique("x"))])

    by_slug = client.find_post(slug=key)
    assert by_slug is not None and by_slug.id == draft.id and by_slug.status == "draft"
    assert tag in by_slug.tags  # the internal tag keeps its '#' name

    by_tag = client.find_post(tag=tag)
    assert by_tag is not None and by_tag.id == draft.id
    assert [p.id for p in client.find_posts(tag)] == [draft.id]
    assert client.find_post(slug=unique("absent")) is None
    assert client.find_post(slug=unique("absent"), tag=internal_tag(unique("absent"))) is None
    assert client.find_post(slug=other.slug).id == other.id  # type: ignore[union-attr]


def test_update_with_stale_updated_at_refetches_once_and_succeeds(client: GhostClient) -> None:
    post = client.create_post("v1", "<p>one</p>", unique("upd"), [])
    time.sleep(1.1)  # Ghost's updated_at has second resolution: make the first edit move it
    first = client.update_post(post.id, post.updated_at, title="v2", html="<p>two</p>")
    assert first.title == "v2" and first.updated_at != post.updated_at

    traffic = record_traffic(client)
    second = client.update_post(post.id, post.updated_at, title="v3", html="<p>three</p>")  # stale
    assert [(m, s) for m, _, s, _ in traffic] == [("PUT", 409), ("GET", 200), ("PUT", 200)]
    assert "UpdateCollisionError" in traffic[0][3]
    assert second.title == "v3"
    fetched = client.get_post(post.id, formats="html")
    assert fetched is not None and fetched.html and "three" in fetched.html


def test_set_draft_unpublishes(client: GhostClient) -> None:
    post = client.create_post("To unpublish", "<p>x</p>", unique("draft"), [])
    drafted = client.set_draft(post.id)
    assert drafted.status == "draft"
    again = client.get_post(post.id)
    assert again is not None and again.status == "draft"
    assert client.set_draft(post.id).status == "draft"  # already a draft: nothing to do


def test_delete_then_delete_again_counts_as_done(client: GhostClient) -> None:
    post = client.create_post("To delete", "<p>x</p>", unique("del"), [])
    assert client.delete_post(post.id) is True
    assert client.delete_post(post.id) is False  # 404: already gone
    assert client.get_post(post.id) is None


def test_taken_slug_is_detected_and_the_renamed_duplicate_removed(client: GhostClient) -> None:
    slug = unique("taken")
    tag = internal_tag(slug)
    original = client.create_post("Original", "<p>1</p>", slug, [tag])
    with pytest.raises(GhostError, match="already taken"):
        client.create_post("Duplicate", "<p>2</p>", slug, [tag])
    assert client.find_post(slug=f"{slug}-2") is None
    assert [p.id for p in client.find_posts(tag)] == [original.id]


def test_client_errors_are_not_retried_and_hold_no_secret(ghost_server: GhostServer, client: GhostClient) -> None:
    key_id, secret = ghost_server.admin_key.split(":")
    tokens: list[str] = []
    client._http.event_hooks["request"].append(lambda req: tokens.append(req.headers["Authorization"]))
    traffic = record_traffic(client)
    with pytest.raises(GhostError) as caught:
        client.create_post("Bad", "<p>x</p>", unique("bad"), [], status="not-a-status")
    error = str(caught.value)
    assert caught.value.status == 422 and len(traffic) == 1  # not retried
    assert "\n" not in error
    for forbidden in (secret, ghost_server.admin_key, *tokens, *(t.split()[1] for t in tokens)):
        assert forbidden not in error

    wrong_secret = "cd" * 32
    with GhostClient(ghost_server.url, f"{key_id}:{wrong_secret}") as bad:
        with pytest.raises(GhostError) as caught:
            bad.find_post(slug="anything")
    assert caught.value.status == 401
    assert wrong_secret not in str(caught.value) and secret not in str(caught.value)


# -- retries (mock transport: Ghost cannot be made to return 429/503 on demand) ------------------


def _post_json(slug: str) -> dict[str, object]:
    return {
        "posts": [
            {
                "id": "p1",
                "uuid": "u1",
                "slug": slug,
                "title": "t",
                "status": "published",
                "updated_at": "2024-01-01T00:00:00.000Z",
                "url": f"http://ghost/{slug}/",
            }
        ]
    }


def _mock_client(handler, sleeps: list[float]) -> GhostClient:  # type: ignore[no-untyped-def]
    return GhostClient(
        "http://ghost.invalid", FAKE_KEY, transport=httpx.MockTransport(handler), sleep=sleeps.append, backoff=0.25
    )


def test_every_request_has_a_fresh_short_lived_token_and_accept_version() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=_post_json("s"))

    with _mock_client(handler, []) as c:
        c.find_post(slug="s")
        c.get_post("p1")
    assert len(seen) == 2
    for request in seen:
        assert request.headers["Accept-Version"] == "v6.0"
        scheme, token = request.headers["Authorization"].split()
        assert scheme == "Ghost"
        assert jwt.get_unverified_header(token)["kid"] == FAKE_KEY.split(":")[0]
        claims = jwt.decode(token, bytes.fromhex(SECRET_HEX), algorithms=["HS256"], audience="/admin/")
        assert 0 < claims["exp"] - claims["iat"] <= 300


@pytest.mark.parametrize("status", [429, 503])
def test_429_and_5xx_are_retried_honouring_retry_after(status: int) -> None:
    answers = [
        httpx.Response(status, headers={"Retry-After": "2"}, json={"errors": [{"message": "busy"}]}),
        httpx.Response(502, text="bad gateway"),
        httpx.Response(200, json=_post_json("s")),
    ]
    sleeps: list[float] = []
    with _mock_client(lambda request: answers.pop(0), sleeps) as c:
        post = c.find_post(slug="s")
    assert post is not None and post.slug == "s"
    assert sleeps == [2.0, 0.5]  # Retry-After first, then exponential backoff (0.25 * 2**1)


def test_retries_are_bounded_and_other_4xx_fail_at_once() -> None:
    calls: list[int] = []

    def always_503(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(503)

    with _mock_client(always_503, []) as c, pytest.raises(GhostError, match="gave up after 5 attempts"):
        c.get_post("p1")
    assert len(calls) == 5

    calls.clear()

    def bad_request(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(400, json={"errors": [{"type": "BadRequestError", "message": "nope"}]})

    with _mock_client(bad_request, []) as c, pytest.raises(GhostError, match="HTTP 400 BadRequestError: nope"):
        c.get_post("p1")
    assert len(calls) == 1

    sleeps: list[float] = []
    long_wait = httpx.Response(503, headers={"Retry-After": "120"})
    with _mock_client(lambda request: long_wait, sleeps) as c:
        c.max_retry_seconds = 10.0
        with pytest.raises(GhostError, match="gave up after 1 attempts"):
            c.get_post("p1")  # a Retry-After beyond the time budget is not waited for
    assert sleeps == []


def test_create_after_a_lost_response_looks_the_slug_up_before_posting_again() -> None:
    log: list[str] = []
    created = {"done": False}

    def handler(request: httpx.Request) -> httpx.Response:
        log.append(f"{request.method} {request.url.path}")
        if request.method == "POST":
            assert request.url.params["source"] == "html"
            body = json.loads(request.content)["posts"][0]
            assert body["html"].startswith(HTML_CARD_BEGIN)
            created["done"] = True  # Ghost created it, but the answer is lost
            raise httpx.ReadTimeout("timed out", request=request)
        if created["done"]:
            return httpx.Response(200, json=_post_json("s"))
        return httpx.Response(404, json={"errors": [{"type": "NotFoundError", "message": "Post not found."}]})

    with _mock_client(handler, []) as c:
        post = c.create_post("t", "<p>x</p>", "s", ["#rec"])
    assert post.slug == "s"
    assert log == ["POST /ghost/api/admin/posts/", "GET /ghost/api/admin/posts/slug/s/"]
