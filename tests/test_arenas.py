"""Arena collectors against a loopback server replaying answers in each API's documented shape
(tests/data/arenas/PROVENANCE.md): several pages, an empty page, a rate-limit answer, a malformed page."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import text

from observatory_assets.defs.collection.arenas import credentials
from observatory_assets.defs.collection.arenas.registry import ARENAS
from observatory_assets.defs.collection.catalog import CatalogError, load_catalog, source_states, sync_catalog
from observatory_assets.defs.collection.polling import run_cycle
from observatory_assets.defs.enrichment.features import featurize_run, search_items
from observatory_assets.defs.ingestion.collect import run_collection
from observatory_assets.defs.ingestion.loading import ingest_collection_run
from observatory_assets.defs.ingestion.records import ARENA_FORMATS
from observatory_assets.lib.feed_server import FeedServer, Reply
from tests.support.helpers import write

DATA = Path(__file__).parent / "data" / "arenas"
ITEM_COLUMNS = "external_id, platform, arena, content_type, author, author_handle, views, likes, shares, comments"


def fixture(name: str) -> bytes:
    return (DATA / name).read_bytes()


def replay(server: FeedServer, path: str, cursor: str, pages: dict[str | None, Reply]) -> None:
    """Serve ``path``: the page its ``cursor`` query parameter names (None: the first)."""

    def answer(handler) -> Reply:
        query = parse_qs(urlsplit(handler.path).query)
        return pages[query.get(cursor, [None])[0]]

    server.routes[path] = answer


def ok(body: bytes, **headers: str) -> Reply:
    return Reply(200, {"Content-Type": "application/json", **headers}, body)


def sync(engine, tmp_path: Path, sources: list[dict]) -> None:
    """The sources in one design that keeps authors in clear, so the tests see what each arena's answer says
    of its authors (pseudonymising them is tests/test_actors_flow.py's)."""
    directory = tmp_path / "sources"
    design = {
        "name": "arenas",
        "sources": [source["name"] for source in sources],
        "authors": "clear",
        "budget": {"credits": 100_000},
    }
    write(directory / "catalog.yaml", json.dumps({"sources": sources, "designs": [design]}))
    with engine.begin() as conn:
        sync_catalog(conn, load_catalog(directory))


def cycle(engine, store, client, now=None):
    """One forced cycle and the ingest of what it collected; the report and the ingest results."""
    report = run_cycle(engine, store, client, force=True, now=now)
    return report, [ingest_collection_run(engine, store, run_id) for run_id in report.runs.values()]


def items(engine) -> list[tuple]:
    with engine.connect() as conn:
        return [tuple(row) for row in conn.execute(text(f"SELECT {ITEM_COLUMNS} FROM raw_items ORDER BY external_id"))]


def state(engine, name: str) -> dict:
    with engine.connect() as conn:
        return source_states(conn, name)[0]


def test_every_arena_reads_its_payload_as_jsonl():
    assert set(ARENAS) <= set(ARENA_FORMATS)


# ---------------------------------------------------------------- reddit

REDDIT = "/r/Denmark/new.json"
REDDIT_ITEMS = [
    ("t3_a1", "reddit", "reddit", "post", "nordlys", "nordlys", None, 37, None, 5),
    ("t3_b2", "reddit", "reddit", "post", "nordlys", "nordlys", None, 154, None, 42),
    ("t3_c3", "reddit", "reddit", "post", "nordlys", "nordlys", None, 88, None, 17),
    ("t3_d4", "reddit", "reddit", "post", None, None, None, 1200, None, 310),  # a deleted author
]


def reddit_source(server: FeedServer) -> dict:
    return {"name": "r-denmark", "format": "reddit", "url": server.url(REDDIT), "params": {"limit": 2}}


def test_reddit_pages_by_after_to_the_empty_page_then_only_to_the_high_water_mark(
    engine, store, client, server, tmp_path
):
    pages = {None: ok(fixture("reddit/page1.json")), "t3_a1": ok(fixture("reddit/page2.json"))}
    pages["t3_c3"] = ok(fixture("reddit/page3_empty.json"))
    replay(server, REDDIT, "after", pages)
    sync(engine, tmp_path, [reddit_source(server)])
    report, ingested = cycle(engine, store, client)
    assert (report.requests_sent, report.items_collected, len(report.runs)) == (1, 4, 1)  # one source, one run
    assert [r.loaded for r in ingested] == [4]
    assert items(engine) == REDDIT_ITEMS
    asked = [path for path, _ in server.requests]
    assert asked == [f"{REDDIT}?sort=new&limit=2&raw_json=1", f"{REDDIT}?sort=new&limit=2&after=t3_a1&raw_json=1",
                     f"{REDDIT}?sort=new&limit=2&after=t3_c3&raw_json=1"]  # fmt: skip
    assert state(engine, "r-denmark")["etag"] == "2026-12-06T10:00:00+00:00"  # the high-water mark
    server.requests.clear()
    report, _ = cycle(engine, store, client)
    assert (report.items_collected, report.runs) == (0, {})  # the first page reaches the mark: nothing new
    assert len(server.requests) == 1


def test_reddit_quota_spent_stops_paging_and_the_host_waits_for_the_reset(engine, store, client, server, tmp_path):
    spent = {"X-Ratelimit-Remaining": "0.0", "X-Ratelimit-Used": "100", "X-Ratelimit-Reset": "420"}
    replay(server, REDDIT, "after", {None: ok(fixture("reddit/page1.json"), **spent)})
    sync(engine, tmp_path, [reddit_source(server)])
    now = datetime.now(UTC)
    report, ingested = cycle(engine, store, client, now=now)
    assert [r.loaded for r in ingested] == [2] and len(server.requests) == 1
    with engine.connect() as conn:
        until = conn.execute(text("SELECT retry_after_until FROM polling_hosts")).scalar_one()
    assert until == now + timedelta(seconds=420)
    assert state(engine, "r-denmark")["error_count"] == 0


def test_reddit_429_on_a_later_page_keeps_the_earlier_pages(engine, store, client, server, tmp_path):
    limited = Reply(429, {"Retry-After": "60", "Content-Type": "application/json"}, b'{"message": "Too Many Requests"}')
    replay(server, REDDIT, "after", {None: ok(fixture("reddit/page1.json")), "t3_a1": limited})
    sync(engine, tmp_path, [reddit_source(server)])
    report, ingested = cycle(engine, store, client)
    assert report.errors == 1 and [r.loaded for r in ingested] == [2]
    source = state(engine, "r-denmark")
    assert source["last_error"] == "HTTP 429 on page 2" and source["error_count"] == 1
    assert source["etag"] is None  # the mark stays: the next cycle pages down past what was missed


def test_reddit_truncated_page_is_a_failed_fetch_with_a_reason(engine, store, client, server, tmp_path):
    pages = {None: ok(fixture("reddit/page1.json")), "t3_a1": ok(fixture("reddit/page2_truncated.json"))}
    replay(server, REDDIT, "after", pages)
    sync(engine, tmp_path, [reddit_source(server)])
    report, ingested = cycle(engine, store, client)
    assert [r.loaded for r in ingested] == [2] and ingested[0].accounted_for
    assert state(engine, "r-denmark")["last_error"].startswith("page 2 malformed: not JSON")
    assert [row[0] for row in items(engine)] == ["t3_a1", "t3_b2"]


def test_reddit_oauth_client_credentials_token_is_sent_and_never_stored(
    engine, store, client, server, tmp_path, monkeypatch
):
    token_requests = []

    def token(handler) -> Reply:
        token_requests.append(handler.headers.get("Authorization"))
        return ok(b'{"access_token": "tok-123", "token_type": "bearer", "expires_in": 86400, "scope": "*"}')

    server.routes["/api/v1/access_token"] = token
    replay(server, REDDIT, "after", {None: ok(fixture("reddit/page3_empty.json"))})
    monkeypatch.setenv("OBSERVATORY_REDDIT_CLIENT_ID", "app-id")
    monkeypatch.setenv("OBSERVATORY_REDDIT_CLIENT_SECRET", "app-secret")
    monkeypatch.setenv("OBSERVATORY_REDDIT_TOKEN_URL", server.url("/api/v1/access_token"))
    sync(engine, tmp_path, [reddit_source(server)])
    ARENAS["reddit"]._tokens.__init__()  # a token of an earlier test's settings is not this one's
    cycle(engine, store, client)
    assert token_requests == ["Basic YXBwLWlkOmFwcC1zZWNyZXQ="]
    assert server.requests[-1][1]["Authorization"] == "bearer tok-123"
    assert "tok-123" not in json.dumps(state(engine, "r-denmark"))


def test_catalog_validates_each_arenas_own_fields(engine, tmp_path, server):
    bad = [
        ({"format": "reddit", "url": server.url("/r/Denmark/new"), "params": {}}, "Reddit JSON endpoint"),
        ({"format": "reddit", "url": server.url(REDDIT), "params": {"limit": 500}}, "params.limit"),
        ({"format": "reddit", "url": server.url(REDDIT), "params": {"q": "klima"}}, "needs a search endpoint"),
        ({"format": "bluesky", "url": server.url("/xrpc/app.bsky.feed.searchPosts"), "params": {}}, "give q"),
        ({"format": "bluesky", "url": server.url("/xrpc/app.bsky.feed.searchPosts"), "params": {"q": "x", "since": "soon"}},
         "params"),
        ({"format": "rss", "url": server.url("/feed"), "params": {"q": "x"}}, "takes none"),
        ({"format": "bluesky"}, "needs its API endpoint"),
        ({"format": "youtube", "url": server.url("/youtube/v3/playlistItems"),
          "params": {"playlistId": "UUabcdefghijklmnopqrstuv", "q": "x"}}, r"takes no search parameters \(q\)"),
        ({"format": "youtube", "url": server.url("/youtube/v3/search"), "params": {"playlistId": "UUabcdefghijklmnopqrstuv"}},
         "playlistItems endpoint"),
        ({"format": "youtube", "url": server.url("/youtube/v3/playlistItems"), "params": {"q": "x"}}, "search endpoint"),
    ]  # fmt: skip
    for spec, message in bad:
        with pytest.raises(CatalogError, match=message):
            sync(engine, tmp_path, [{"name": "s", **spec}])


# ---------------------------------------------------------------- bluesky

SEARCH = "/xrpc/app.bsky.feed.searchPosts"
FEED = "/xrpc/app.bsky.feed.getAuthorFeed"


def test_bluesky_search_pages_by_cursor_and_maps_engagement(engine, store, client, server, tmp_path):
    pages = {None: ok(fixture("bluesky/search_page1.json")), "25": ok(fixture("bluesky/search_page2.json"))}
    pages["50"] = ok(fixture("bluesky/search_page3_empty.json"))
    replay(server, SEARCH, "cursor", pages)
    sync(engine, tmp_path, [{"name": "bsky-klima", "format": "bluesky", "url": server.url(SEARCH),
                             "params": {"q": "klimaloven", "lang": "da"}}])  # fmt: skip
    report, ingested = cycle(engine, store, client)
    assert [r.loaded for r in ingested] == [4] and len(server.requests) == 3
    assert server.requests[0][0] == f"{SEARCH}?q=klimaloven&lang=da&sort=latest&limit=100"
    with engine.connect() as conn:
        mette = conn.execute(
            text(f"SELECT {ITEM_COLUMNS}, url, language FROM raw_items WHERE external_id LIKE '%3ldk2a'")
        ).one()
    assert tuple(mette)[1:] == (
        "bluesky", "bluesky", "post", "Mette", "mette.bsky.social", None, 210, 31, 12,
        "https://bsky.app/profile/did:plc:mettexxxxxxxxxxxxxxxxxxx/post/3ldk2a", "da",
    )  # fmt: skip
    assert state(engine, "bsky-klima")["etag"] == "2026-12-06T11:00:00+00:00"


def test_bluesky_author_feed_skips_reposts(engine, store, client, server, tmp_path):
    replay(server, FEED, "cursor", {None: ok(fixture("bluesky/author_feed.json")),
                                    "2026-12-05T15:30:00.000Z": ok(b'{"feed": []}')})  # fmt: skip
    sync(engine, tmp_path, [{"name": "bsky-mette", "format": "bluesky", "url": server.url(FEED),
                             "params": {"actor": "mette.bsky.social", "filter": "posts_no_replies"}}])  # fmt: skip
    _, ingested = cycle(engine, store, client)
    assert [r.loaded for r in ingested] == [2]
    assert {row[5] for row in items(engine)} == {"mette.bsky.social"}


def test_bluesky_rate_limit_and_malformed_pages(engine, store, client, server, tmp_path):
    limited = Reply(
        429, {"Retry-After": "30", "Content-Type": "application/json"}, fixture("bluesky/rate_limited.json")
    )
    replay(server, SEARCH, "cursor", {None: limited})
    sync(engine, tmp_path, [{"name": "bsky", "format": "bluesky", "url": server.url(SEARCH), "params": {"q": "x"}}])
    now = datetime.now(UTC)
    report, ingested = cycle(engine, store, client, now=now)
    assert (report.errors, ingested) == (1, [])
    assert state(engine, "bsky")["last_error"] == "HTTP 429 on page 1"
    with engine.connect() as conn:
        assert conn.execute(text("SELECT retry_after_until FROM polling_hosts")).scalar_one() == now + timedelta(
            seconds=30
        )
        conn.execute(text("DELETE FROM polling_hosts"))
        conn.commit()
    malformed = ok(b'{"cursor": "9", "posts": [{"uri": "at://did:plc:x/app.bsky.feed.post/1"}]}')
    replay(server, SEARCH, "cursor", {None: ok(fixture("bluesky/search_page1.json")), "25": malformed})
    report, ingested = cycle(engine, store, client)
    assert [r.loaded for r in ingested] == [2]
    assert state(engine, "bsky")["last_error"] == "page 2 malformed: a post without record or author"


# ---------------------------------------------------------------- telegram

CHANNEL = "/s/dr_nyheder"


def test_telegram_preview_pages_by_before_with_view_counters(engine, store, client, server, tmp_path):
    pages = {None: ok(fixture("telegram/page1.html")), "101": ok(fixture("telegram/page2.html"))}
    pages["99"] = ok(fixture("telegram/page3_empty.html"))
    replay(server, CHANNEL, "before", pages)
    sync(engine, tmp_path, [{"name": "dr-telegram", "format": "telegram", "url": server.url(CHANNEL)}])
    _, ingested = cycle(engine, store, client)
    assert [r.loaded for r in ingested] == [4] and len(server.requests) == 3
    assert [(row[0], row[4], row[5], row[6]) for row in items(engine)] == [
        ("dr_nyheder/100", "DR Nyheder", "dr_nyheder", 3_000_000),
        ("dr_nyheder/101", "DR Nyheder", "dr_nyheder", 1_200),
        ("dr_nyheder/102", "DR Nyheder", "dr_nyheder", 987),
        ("dr_nyheder/99", "DR Nyheder", "dr_nyheder", 15_300),
    ]
    with engine.connect() as conn:
        texts = dict(conn.execute(text("SELECT external_id, text FROM raw_items")).all())
    assert texts["dr_nyheder/101"] == "Folketinget har vedtaget klimaloven.\nLæs mere på dr.dk"
    assert texts["dr_nyheder/99"] == "Finansloven er på plads & underskrevet"


def test_telegram_page_that_is_no_channel_preview_is_malformed(engine, store, client, server, tmp_path):
    replay(server, CHANNEL, "before", {None: ok(fixture("telegram/not_a_channel.html"))})
    sync(engine, tmp_path, [{"name": "dr-telegram", "format": "telegram", "url": server.url(CHANNEL)}])
    report, ingested = cycle(engine, store, client)
    assert (report.errors, ingested) == (1, [])
    assert (
        state(engine, "dr-telegram")["last_error"]
        == "page 1 malformed: not a channel preview (no tgme_channel_history)"
    )


# ---------------------------------------------------------------- gdelt

DOC = "/api/v2/doc/doc"


def test_gdelt_artlist_one_request_per_window_articles_to_their_outlets(engine, store, client, server, tmp_path):
    replay(server, DOC, "cursor", {None: ok(fixture("gdelt/artlist.json"))})
    sync(engine, tmp_path, [{"name": "gdelt-dk", "format": "gdelt", "url": server.url(DOC), "aggregator": True,
                             "params": {"query": "klima sourcecountry:denmark", "timespan": "1d"}}])  # fmt: skip
    _, ingested = cycle(engine, store, client)
    assert [r.loaded for r in ingested] == [2] and set(ingested[0].by_source) == {"dr.dk", "politiken.dk"}
    assert server.requests[0][0] == (
        f"{DOC}?query=klima+sourcecountry%3Adenmark&timespan=1d&maxrecords=250&sort=DateDesc&mode=ArtList&format=json"
    )
    assert {(row[1], row[3]) for row in items(engine)} == {("gdelt", "article")}
    replay(server, DOC, "cursor", {None: ok(fixture("gdelt/empty.json"))})
    report, ingested = cycle(engine, store, client)  # spaced 5 s after the first request, as GDELT asks
    assert (report.errors, report.items_collected, ingested) == (0, 0, [])


def test_gdelt_rate_limit_and_refused_query(engine, store, client, server, tmp_path):
    limited = Reply(429, {"Content-Type": "text/plain"}, fixture("gdelt/rate_limited.txt"))
    replay(server, DOC, "cursor", {None: limited})
    sync(engine, tmp_path, [{"name": "gdelt", "format": "gdelt", "url": server.url(DOC), "params": {"query": "x"}}])
    cycle(engine, store, client)
    assert state(engine, "gdelt")["last_error"] == "HTTP 429 on page 1"
    replay(server, DOC, "cursor", {None: ok(fixture("gdelt/refused_query.txt"))})
    cycle(engine, store, client)
    assert state(engine, "gdelt")["last_error"] == (
        "page 1 malformed: Your search contained a keyword that was too short or too common."
    )


def test_search_by_platform_reads_the_column(engine, store, client, server, tmp_path):
    replay(
        server,
        REDDIT,
        "after",
        {None: ok(fixture("reddit/page1.json")), "t3_a1": ok(fixture("reddit/page3_empty.json"))},
    )
    replay(server, SEARCH, "cursor", {None: ok(fixture("bluesky/search_page1.json"))})
    sync(engine, tmp_path, [reddit_source(server),
                            {"name": "bsky", "format": "bluesky", "url": server.url(SEARCH), "params": {"q": "klima"}}])  # fmt: skip
    report, _ = cycle(engine, store, client)
    for run_id in report.runs.values():
        featurize_run(engine, run_id)
    assert {hit["platform"] for hit in search_items(engine, "klimaloven OR klimalov")} == {"reddit", "bluesky"}
    hits = search_items(engine, "klimaloven OR klimalov", platform="Bluesky")
    assert hits and {hit["platform"] for hit in hits} == {"bluesky"}


def test_a_stale_arena_run_is_not_retried_as_one_plain_request(engine, store, server):
    payloads = [{"name": "r-denmark", "fmt": "reddit", "path": None, "url": server.url(REDDIT)}]
    with engine.begin() as conn:
        run_id = conn.execute(
            text("INSERT INTO collection_runs (status, payloads) VALUES ('failed', CAST(:p AS jsonb)) RETURNING id"),
            {"p": json.dumps(payloads)},
        ).scalar_one()
    with pytest.raises(ValueError, match="arena sources r-denmark are collected by the poller's next cycle"):
        run_collection(engine, store, run_id)
    with engine.connect() as conn:
        assert (
            conn.execute(text("SELECT status FROM collection_runs WHERE id = :id"), {"id": run_id}).scalar() == "failed"
        )
    assert server.requests == []


# ---------------------------------------------------------------- youtube

YT_SEARCH = "/youtube/v3/search"
YT_VIDEOS = "/youtube/v3/videos"
SPENT_KEY, GOOD_KEY = "AIza-spent-key-000000000000000000000", "AIza-good-key-1111111111111111111111"


def test_youtube_key_pool_rests_the_spent_key_and_charges_quota_units(
    engine, store, client, server, tmp_path, monkeypatch, database_url
):
    asked: list[dict] = []

    def search(handler) -> Reply:
        query = {k: v[0] for k, v in parse_qs(urlsplit(handler.path).query).items()}
        asked.append(query)
        if query["key"] == SPENT_KEY:
            return Reply(403, {"Content-Type": "application/json"}, fixture("youtube/quota_exceeded.json"))
        return ok(
            fixture("youtube/search_page2.json" if query.get("pageToken") == "CAIQAA" else "youtube/search_page1.json")
        )

    def videos(handler) -> Reply:
        query = {k: v[0] for k, v in parse_qs(urlsplit(handler.path).query).items()}
        asked.append(query)
        return ok(fixture("youtube/videos_statistics.json"))

    server.routes[YT_SEARCH], server.routes[YT_VIDEOS] = search, videos
    monkeypatch.setenv("OBSERVATORY_DATABASE_URL", database_url)
    monkeypatch.setenv("OBSERVATORY_SECRET_KEY", "x" * 43 + "=")
    monkeypatch.setenv("OBSERVATORY_YOUTUBE_API_KEYS", f"{SPENT_KEY}, {GOOD_KEY}")
    sync(engine, tmp_path, [{"name": "yt-dr", "format": "youtube", "url": server.url(YT_SEARCH),
                             "params": {"q": "klimaloven", "regionCode": "DK"}}])  # fmt: skip
    now = datetime.now(UTC)
    report, ingested = cycle(engine, store, client, now=now)
    assert [r.loaded for r in ingested] == [3]
    assert [q["key"] for q in asked] == [SPENT_KEY, GOOD_KEY, GOOD_KEY, GOOD_KEY, GOOD_KEY]  # the spent key once
    assert asked[2] == {"part": "statistics", "id": "vid00000002,vid00000001", "key": GOOD_KEY}
    assert items(engine)[-1] == ("vid00000002", "youtube", "youtube", "video", "DR Nyheder",
                                 "UCabcdefghijklmnopqrstuv", 15230, 412, None, 87)  # fmt: skip
    with engine.connect() as conn:
        pool = conn.execute(
            text("SELECT label, secret, units_used, resting_until FROM api_credentials ORDER BY id")
        ).all()
        stored = json.dumps(source_states(conn, "yt-dr")) + "".join(
            str(row) for row in conn.execute(text("SELECT raw_metadata, url FROM raw_items"))
        )
        cost = conn.execute(text("SELECT cost_per_request FROM sources WHERE name = 'yt-dr'")).scalar_one()
    assert [(row.units_used, row.resting_until is not None) for row in pool] == [(0, True), (202, False)]
    assert pool[0].resting_until > now and pool[0].resting_until.astimezone(credentials.PACIFIC).hour == 0
    assert float(cost) == 202  # quota units are the credits one cycle may spend
    [payload_key] = _payload_keys(engine)
    with store.open(payload_key) as stream:
        payload = stream.read().decode()
    for key in (SPENT_KEY, GOOD_KEY):
        assert key not in stored and key not in payload
        assert key.encode() not in b"".join(bytes(row.secret) for row in pool)


def _payload_keys(engine) -> list[str]:
    with engine.connect() as conn:
        return [
            p["key"] for (payloads,) in conn.execute(text("SELECT payloads FROM collection_runs")) for p in payloads
        ]


def test_youtube_every_key_spent_is_a_failed_fetch_until_the_reset(
    engine, store, client, server, tmp_path, monkeypatch, database_url
):
    spent = Reply(403, {"Content-Type": "application/json"}, fixture("youtube/quota_exceeded.json"))
    server.routes[YT_SEARCH] = lambda handler: spent
    monkeypatch.setenv("OBSERVATORY_DATABASE_URL", database_url)
    monkeypatch.setenv("OBSERVATORY_SECRET_KEY", "y" * 43 + "=")
    monkeypatch.setenv("OBSERVATORY_YOUTUBE_API_KEYS", SPENT_KEY)
    sync(engine, tmp_path, [{"name": "yt", "format": "youtube", "url": server.url(YT_SEARCH), "params": {"q": "x"}}])
    now = datetime.now(UTC)
    report, ingested = cycle(engine, store, client, now=now)
    assert (report.errors, ingested) == (1, [])
    assert state(engine, "yt")["last_error"] == "page 1: every youtube key's quota is spent until the quota day resets"
    with engine.connect() as conn:
        waits = conn.execute(text("SELECT retry_after_until FROM polling_hosts")).scalar_one()
    assert waits == credentials.quota_reset(now)
    assert len(server.requests) == 1  # a resting key is not asked again
