"""Publishing digests to the static site: idempotency, the trend section, valid feeds, a page that
renders in a real browser, and a hostile-HTML corpus that leaves no active content anywhere."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import feedparser
import httpx
import jsonschema
import lxml.html
import pytest
from lxml import etree
from sqlalchemy import text

from observatory_assets.defs.publishing import publisher
from observatory_assets.defs.publishing.digest import load_digest, render_fragment
from observatory_assets.defs.publishing.publisher import publish_day
from observatory_assets.defs.publishing.site import (
    ATOM_FEED_KEY,
    INDEX_KEY,
    JSON_FEED_KEY,
    StaticTarget,
    feed_entry_id,
    page_key,
)
from observatory_assets.defs.trends.charts import ledger_chart
from tests.support.digests import seed_day, seed_event, seed_trend

DATA = Path(__file__).parent / "data"
DAY = date(2024, 5, 1)

#: Hostile titles, summaries and URLs: none of it may stay active in a page, a feed or a Ghost post.
HOSTILE = [
    ("<script>alert('t1')</script>Budget vote", "<script>document.cookie</script>Summary one."),
    ('<img src=x onerror="alert(2)">Flood warning', '<a href="javascript:alert(3)">click</a> summary.'),
    ('<svg onload="alert(4)"><circle r="9"/></svg>Strike ends', "<iframe src='https://evil.example'></iframe>text"),
    ("<b><i>broken <div>nesting</b> title", "<p onclick='alert(5)'>unclosed <style>body{}</style>"),
    ("&lt;script&gt;alert(6)&lt;/script&gt; entity title", "&#x3C;img src=x onerror=alert(7)&#x3E; entities"),
    (
        '<a href="data:text/html;base64,PHNjcmlwdD5hbGVydCg4KTwvc2NyaXB0Pg==">data link</a>',
        "<object data='x'></object>",
    ),
]
HOSTILE_URLS = ["javascript:alert('u1')", "data:text/html,<script>alert('u2')</script>", " JaVaScRiPt:alert(1)"]


def read(store, key: str) -> bytes:
    with store.open(key) as stream:
        return stream.read()


def seed_hostile(engine, day: date) -> None:
    for n, (title, summary) in enumerate(HOSTILE):
        url = HOSTILE_URLS[n % len(HOSTILE_URLS)]
        seed_event(engine, day, title, summary, [(title, url, f"src-{n}"), ("plain", "https://ok.example/a", "other")])


def assert_no_active_content(html: str, trusted_images: tuple[str, ...] = ()) -> None:
    """No script, no event handler, no javascript:/data: URL (but our own charts), no SVG/iframe/object
    or external resource in ``html``."""
    doc = lxml.html.fromstring(f"<div>{html}</div>")
    banned = {"script", "style", "iframe", "object", "embed", "svg", "math", "form", "input", "link", "meta", "base"}
    for element in doc.iter():
        if not isinstance(element.tag, str):
            continue
        assert element.tag.lower() not in banned, element.tag
        for name, value in element.attrib.items():
            assert not name.lower().startswith("on"), (element.tag, name)
            assert name.lower() != "style"
            if name.lower() in ("href", "src", "action", "formaction", "xlink:href", "srcset"):
                lowered = value.strip().lower()
                assert not lowered.startswith("javascript:"), value
                if lowered.startswith("data:"):
                    assert element.tag == "img" and value in trusted_images, value
                if element.tag == "img":
                    assert value in trusted_images, "no external resources"


def test_publishing_the_same_day_twice_is_one_record_and_a_recorded_skip(engine, store) -> None:
    seed_day(engine, DAY, events=3)
    target = StaticTarget(store)
    first = publish_day(engine, store, target, DAY, actor="test")
    page = read(store, page_key(DAY))
    second = publish_day(engine, store, target, DAY, actor="test")
    assert (first.action, second.action) == ("created", "unchanged")
    assert first.record_id == second.record_id and first.content_hash == second.content_hash
    assert read(store, page_key(DAY)) == page
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM publish_records")).scalar_one() == 1
        audit = conn.execute(
            text("SELECT action, outcome, target FROM audit_log WHERE object_type = 'publish_record' ORDER BY id")
        ).all()
        linked = conn.execute(text("SELECT count(*) FROM publish_record_items")).scalar_one()
    assert [tuple(a) for a in audit] == [("publish", "ok", "static"), ("skip", "skipped", "static")]
    assert linked == 3 + 2 + 1  # every item of the day's events


def test_changed_content_updates_the_page_in_place(engine, store) -> None:
    seed_day(engine, DAY, events=2)
    target = StaticTarget(store)
    first = publish_day(engine, store, target, DAY, actor="test")
    seed_event(engine, DAY, "A late breaking story", "It broke late.", [("Late", "https://late.example/1", "late")])
    second = publish_day(engine, store, target, DAY, actor="test")
    assert second.action == "updated" and second.record_id == first.record_id
    assert second.content_hash != first.content_hash
    assert "A late breaking story" in read(store, page_key(DAY)).decode()
    feed = json.loads(read(store, JSON_FEED_KEY))
    assert [i["id"] for i in feed["items"]] == [feed_entry_id(first.record_id)]
    assert "A late breaking story" in feed["items"][0]["content_html"]


def test_a_skip_renders_nothing_and_any_change_to_what_the_page_shows_is_published(engine, store, monkeypatch):
    (event_id, items), _ = seed_day(engine, DAY, events=2)
    _, wide = seed_event(engine, DAY, "Wide story", None, [(f"Copy {n}", None, f"wide-{n}") for n in range(7)])
    trend = seed_trend(
        engine, DAY, "ceasefire", "Ceasefire by June", (0.0, 0.4), "Both sides confirmed talks.", event_id
    )
    target = StaticTarget(store)
    publish_day(engine, store, target, DAY, actor="test")
    rendered = []
    monkeypatch.setattr(publisher, "render_fragment", lambda digest: rendered.append(digest) or render_fragment(digest))
    assert publish_day(engine, store, target, DAY, actor="test").action == "unchanged" and rendered == []

    with engine.begin() as conn:  # a source item's title: shown in a link, not in the event's own row
        conn.execute(text("UPDATE raw_items SET title = 'Corrected headline' WHERE id = :id"), {"id": items[1]})
    assert publish_day(engine, store, target, DAY, actor="test").action == "updated" and len(rendered) == 1
    assert "Corrected headline" in read(store, page_key(DAY)).decode()

    with engine.begin() as conn:  # the ledger is restated: the move and its chart are drawn from it again
        conn.execute(text("UPDATE trend_evidence SET delta_log_odds = 0.6 WHERE trend_id = :id"), {"id": trend})
    assert publish_day(engine, store, target, DAY, actor="test").action == "updated" and len(rendered) == 2
    with engine.connect() as conn:
        chart = base64.b64encode(ledger_chart(conn, trend, "Ceasefire by June", DAY)).decode()
    assert chart in read(store, page_key(DAY)).decode()

    with engine.begin() as conn:  # the seventh item's title: past the links shown, so the page stays the same
        conn.execute(text("UPDATE raw_items SET title = 'Not shown' WHERE id = :id"), {"id": wide[-1]})
    assert publish_day(engine, store, target, DAY, actor="test").action == "unchanged" and len(rendered) == 3
    assert publish_day(engine, store, target, DAY, actor="test").action == "unchanged" and len(rendered) == 3


def test_events_are_ranked_by_sources_then_size_then_novelty(engine, store) -> None:
    few = seed_event(engine, DAY, "Two sources", None, [("a", None, "s1"), ("b", None, "s2")])
    many = seed_event(engine, DAY, "Three sources", None, [("a", None, "s1"), ("b", None, "s2"), ("c", None, "s3")])
    big = seed_event(
        engine, DAY, "Two sources, more items", None, [("a", None, "s1"), ("b", None, "s2"), ("c", None, "s2")]
    )
    newer = seed_event(engine, DAY, "Two sources, newer", None, [("a", None, "s1"), ("b", None, "s2")], hour=20)
    seed_event(engine, date(2024, 5, 2), "Another day", None, [("x", None, "s1")])
    with engine.connect() as conn:
        digest = load_digest(conn, DAY)
    assert [e.event_id for e in digest.events] == [many[0], big[0], newer[0], few[0]]


def test_the_trend_section_shows_moves_charts_and_evidence_and_is_absent_without_trends(engine, store) -> None:
    event_id, _ = seed_event(engine, DAY, "Ceasefire talks", "Talks resumed.", [("t", "https://a.example/", "s")])
    with engine.connect() as conn:
        assert "Trend moves" not in render_fragment(load_digest(conn, DAY, store))
    ceasefire = seed_trend(
        engine, DAY, "ceasefire", "Ceasefire by June", (-1.0, -0.2), "Both sides confirmed talks.", event_id
    )
    escalation = seed_trend(engine, DAY, "escalation", "Escalation", (0.5, 0.4), "A minor incident.", event_id)

    outcome = publish_day(engine, store, StaticTarget(store), DAY, actor="test")
    page = read(store, page_key(DAY)).decode()
    assert outcome.trends == 2
    assert page.index("Ceasefire by June") < page.index("Escalation")  # biggest move first
    # +0.8 at 09:00, decayed by the day's end (half-life 168 h): the ledger's move over the day
    assert "+0.75 log-odds" in page and "Both sides confirmed talks." in page
    assert "1 evidence line in this interval" in page
    with engine.connect() as conn:
        chart_uris = tuple(
            "data:image/png;base64," + base64.b64encode(ledger_chart(conn, trend, title, DAY)).decode()
            for trend, title in ((ceasefire, "Ceasefire by June"), (escalation, "Escalation"))
        )
    assert all(f'src="{uri}"' in page for uri in chart_uris)
    assert_no_active_content(lxml.html.tostring(lxml.html.fromstring(page).body).decode(), chart_uris)


def test_feeds_validate_against_their_schemas_and_parse_cleanly(engine, store) -> None:
    seed_day(engine, DAY, events=3)
    seed_day(engine, date(2024, 5, 2), events=2)
    target = StaticTarget(store)
    for day in (DAY, date(2024, 5, 2)):
        publish_day(engine, store, target, day, actor="test")
    atom = read(store, ATOM_FEED_KEY)
    schema = etree.RelaxNG(etree.parse(str(DATA / "atom.rng")))
    assert schema.validate(etree.fromstring(atom)), schema.error_log
    feed = json.loads(read(store, JSON_FEED_KEY))
    jsonschema.validate(
        feed, json.loads((DATA / "jsonfeed-1.1.schema.json").read_text()), format_checker=jsonschema.FormatChecker()
    )
    # feedparser 6.0.14, the newest release, has no JSON Feed parser: the JSON Feed is checked by its schema
    parsed = feedparser.parse(atom)
    assert parsed.bozo == 0, parsed.get("bozo_exception")
    assert [e.title for e in parsed.entries] == ["Observatory digest, 02 May 2024", "Observatory digest, 01 May 2024"]
    assert [i["title"] for i in feed["items"]] == [e.title for e in parsed.entries]  # newest first in both
    index = read(store, INDEX_KEY).decode()
    assert index.index("02 May 2024") < index.index("01 May 2024")

    # an invalid document is caught: the checks can fail
    assert not schema.validate(etree.fromstring(atom.replace(b"<updated>", b"<updated>not a date", 1)))
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(
            {**feed, "items": [{"title": "no id"}]}, json.loads((DATA / "jsonfeed-1.1.schema.json").read_text())
        )


def test_the_digest_page_renders_in_headless_chromium(engine, store, tmp_path) -> None:
    chromium = shutil.which("chromium")
    assert chromium, "chromium is installed by .ci/run"
    seed_day(engine, DAY, events=3)
    publish_day(engine, store, StaticTarget(store), DAY, actor="test")
    page = store.download_url(page_key(DAY))
    with tempfile.TemporaryDirectory() as profile:
        done = subprocess.run(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             f"--user-data-dir={profile}", "--window-size=390,844", "--dump-dom", f"file://{page}"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    dom = lxml.html.fromstring(done.stdout)
    assert dom.findtext(".//title") == "Observatory digest, 01 May 2024"
    assert dom.findtext(".//h1") == "Observatory digest, 01 May 2024"
    assert [h.text for h in dom.iter("h3")] == ["Event number 0", "Event number 1", "Event number 2"]
    assert dom.xpath("//meta[@name='viewport']")


def test_hostile_html_leaves_no_active_content_in_the_page_or_the_feeds(engine, store) -> None:
    seed_hostile(engine, DAY)
    outcome = publish_day(engine, store, StaticTarget(store), DAY, actor="test")
    assert outcome.events == len(HOSTILE)
    page = read(store, page_key(DAY)).decode()
    body = lxml.html.fromstring(page).body
    assert_no_active_content(lxml.html.tostring(body).decode())
    assert "Budget vote" in body.text_content() and "entity title" in body.text_content()
    atom = feedparser.parse(read(store, ATOM_FEED_KEY))
    assert_no_active_content(atom.entries[0].content[0].value)
    json_feed = json.loads(read(store, JSON_FEED_KEY))
    assert_no_active_content(json_feed["items"][0]["content_html"])
    with pytest.raises(AssertionError):  # the check itself catches active content
        assert_no_active_content('<a href="javascript:x()">x</a>')


def test_cli_publishes_and_serves_the_site(dagster_env, engine, tmp_path) -> None:
    seed_day(engine, DAY, events=2)
    cli = [sys.executable, "-m", "observatory_assets.cli"]
    done = subprocess.run([*cli, "publish", "--date", DAY.isoformat()], env=dagster_env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "publish record" in done.stdout and "site:" in done.stdout
    assert (tmp_path / "objects" / "site" / "digests" / f"{DAY}.html").is_file()
    bad = subprocess.run([*cli, "publish", "--date", "2024-13-01"], env=dagster_env, capture_output=True, text=True)
    assert bad.returncode != 0 and "Traceback" not in bad.stderr

    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with subprocess.Popen(
        [*cli, "site", "serve", "--port", str(port)], env=dagster_env, stdout=subprocess.PIPE, text=True
    ) as server:  # its pipe closed with it
        try:
            assert "serving the static site" in server.stdout.readline()
            deadline = time.monotonic() + 20
            while True:
                try:
                    index = httpx.get(f"http://127.0.0.1:{port}/", timeout=2)
                    break
                except httpx.HTTPError:
                    assert time.monotonic() < deadline
                    time.sleep(0.2)
            assert index.status_code == 200 and "01 May 2024" in index.text
            assert httpx.get(f"http://127.0.0.1:{port}/digests/{DAY}.html").status_code == 200
            assert httpx.get(f"http://127.0.0.1:{port}/feed.atom").headers["content-type"] == "application/atom+xml"
            assert httpx.get(f"http://127.0.0.1:{port}/../pgdata").status_code == 404
        finally:
            server.terminate()
            server.wait(10)
