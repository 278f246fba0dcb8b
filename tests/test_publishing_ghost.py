"""Publishing digests to a real Ghost 6 (tests/support/ghost.py): one post per day however often it
runs, in-place updates, a SIGKILL between Ghost's create and our commit, a 409 on update, and hostile
HTML that Ghost would otherwise store verbatim."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from datetime import date, timedelta

import httpx
import pytest
from sqlalchemy import text

from observatory_assets.defs.publishing.ghost import GhostClient
from observatory_assets.defs.publishing.publisher import publish_day
from observatory_assets.defs.publishing.targets import GhostTarget, ghost_slug, record_tag
from tests.support.digests import seed_day, seed_event
from tests.test_publishing import HOSTILE, assert_no_active_content, seed_hostile


@pytest.fixture
def ghost(ghost_server):
    with GhostClient(ghost_server.url, ghost_server.admin_key) as client:
        yield GhostTarget(client)


@pytest.fixture
def day() -> date:
    """A day no other test publishes (the Ghost server is shared by the session)."""
    return date(2030, 1, 1) + timedelta(days=uuid.uuid4().int % 20000)


def posts_of(ghost: GhostTarget, day: date) -> list:
    return ghost.client.find_posts(record_tag(day))


def test_publishing_twice_gives_one_post_and_a_recorded_skip(engine, store, ghost, day) -> None:
    seed_day(engine, day, events=3)
    first = publish_day(engine, store, ghost, day, actor="test")
    second = publish_day(engine, store, ghost, day, actor="test")
    assert (first.action, second.action) == ("created", "unchanged")
    posts = posts_of(ghost, day)
    assert [p.id for p in posts] == [first.external_id]
    post = ghost.client.get_post(first.external_id, formats="html")
    assert post.slug == ghost_slug(day) and post.status == "published"
    assert "Event number 0" in post.html  # ?source=html: the HTML card is kept
    with engine.connect() as conn:
        assert conn.execute(
            text("SELECT array_agg(action ORDER BY id) FROM audit_log WHERE target = 'ghost'")
        ).scalar_one() == ["publish", "skip"]


def test_changed_content_updates_the_post_in_place(engine, store, ghost, day) -> None:
    seed_day(engine, day, events=2)
    first = publish_day(engine, store, ghost, day, actor="test")
    seed_event(engine, day, "A late breaking story", "It broke late.", [("Late", "https://late.example/", "late")])
    second = publish_day(engine, store, ghost, day, actor="test")
    assert second.action == "updated" and second.external_id == first.external_id
    assert [p.id for p in posts_of(ghost, day)] == [first.external_id]
    assert "A late breaking story" in ghost.client.get_post(first.external_id, formats="html").html


def test_sigkill_between_ghost_create_and_commit_then_retry_leaves_one_post(
    engine, store, ghost, ghost_server, database_url, day, tmp_path
) -> None:
    seed_day(engine, day, events=2)
    child = textwrap.dedent(
        f"""
        import os, signal
        from datetime import date
        from observatory_assets.defs.publishing import targets
        from observatory_assets.defs.publishing.ghost import GhostClient
        from observatory_assets.defs.publishing.publisher import publish_day
        from resources.object_store import LocalObjectStore
        from resources.postgres import engine_for

        put = targets.GhostTarget.put
        def put_then_die(self, *args, **kwargs):
            put(self, *args, **kwargs)          # Ghost has created the post ...
            os.kill(os.getpid(), signal.SIGKILL)  # ... and the process dies before the database commit
        targets.GhostTarget.put = put_then_die
        target = targets.GhostTarget(GhostClient({ghost_server.url!r}, os.environ["GHOST_KEY"]))
        publish_day(engine_for({database_url!r}), LocalObjectStore({str(tmp_path / "objects")!r}), target,
                    date.fromisoformat({day.isoformat()!r}), actor="child")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", child], env={**os.environ, "GHOST_KEY": ghost_server.admin_key},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM publish_records")).scalar_one() == 0  # nothing committed
    assert len(posts_of(ghost, day)) == 1  # but Ghost has the post

    retry = publish_day(engine, store, ghost, day, actor="retry")
    posts = posts_of(ghost, day)
    assert retry.action == "created" and [p.id for p in posts] == [retry.external_id]
    assert ghost.client.find_post(slug=ghost_slug(day) + "-2") is None
    assert posts[0].slug == ghost_slug(day)


def test_a_409_on_update_is_answered_by_one_refetch_and_a_successful_retry(
    engine, store, ghost, ghost_server, day
) -> None:
    seed_day(engine, day, events=2)
    first = publish_day(engine, store, ghost, day, actor="test")
    seed_event(engine, day, "Edited story", None, [("Edit", None, "edit")])
    traffic: list[tuple[str, int]] = []
    edited = []

    def edit_just_before_our_put(request: httpx.Request) -> None:
        if request.method == "PUT" and not edited:  # someone edits the post in Ghost meanwhile
            time.sleep(
                1.1
            )  # Ghost's updated_at has one-second resolution: an edit within the same second is no collision
            with GhostClient(ghost_server.url, ghost_server.admin_key) as other:
                post = other.get_post(first.external_id)
                other.update_post(post.id, post.updated_at, custom_excerpt="edited elsewhere")
            edited.append(True)

    ghost.client._http.event_hooks["request"].append(edit_just_before_our_put)
    ghost.client._http.event_hooks["response"].append(lambda r: traffic.append((r.request.method, r.status_code)))
    second = publish_day(engine, store, ghost, day, actor="test")
    assert second.action == "updated" and second.external_id == first.external_id
    puts_and_after = traffic[[m for m, _ in traffic].index("PUT") :]
    assert puts_and_after == [("PUT", 409), ("GET", 200), ("PUT", 200)]
    assert "Edited story" in ghost.client.get_post(first.external_id, formats="html").html


def test_hostile_html_leaves_no_active_content_in_the_ghost_post(engine, store, ghost, day) -> None:
    seed_hostile(engine, day)
    outcome = publish_day(engine, store, ghost, day, actor="test")
    assert outcome.events == len(HOSTILE)
    post = ghost.client.get_post(outcome.external_id, formats="html")
    assert "Budget vote" in post.html
    assert_no_active_content(post.html)
