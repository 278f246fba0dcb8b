"""Following actors beyond Bluesky: a design's actor list turns a Telegram channel, a YouTube channel and a
Reddit user into sources that read that account's own posts, each polled on a loopback server answering in
the platform's documented shape (tests/data/arenas/PROVENANCE.md), ingested and linked to the actor."""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import text

from observatory_assets.cli.collection import sync_sources
from observatory_assets.defs.actors.linking import link_items
from observatory_assets.defs.collection.catalog import CatalogError
from observatory_assets.lib.feed_server import FeedServer
from resources.embedded import author_pseudonym_key
from tests.support.helpers import write
from tests.test_arenas import cycle, fixture, ok, replay

CHANNEL_ID = "UCabcdefghijklmnopqrstuv"


def _telegram(server: FeedServer, monkeypatch) -> str:
    monkeypatch.setenv("OBSERVATORY_TELEGRAM_WEB", server.base_url)
    pages = {None: ok(fixture("telegram/page1.html")), "101": ok(fixture("telegram/page2.html"))}
    pages["99"] = ok(fixture("telegram/page3_empty.html"))
    replay(server, "/s/dr_nyheder", "before", pages)
    return "/s/dr_nyheder"


def _youtube(server: FeedServer, monkeypatch) -> str:
    monkeypatch.setenv("OBSERVATORY_YOUTUBE_API", server.base_url)
    monkeypatch.setenv("OBSERVATORY_YOUTUBE_API_KEYS", "AIza-feed-key-22222222222222222222222")

    def uploads(handler):
        query = parse_qs(urlsplit(handler.path).query)
        # the channel's uploads playlist (1 quota unit a page), not a search of the channel (100)
        assert query["playlistId"] == ["UU" + CHANNEL_ID[2:]] and query["part"] == ["snippet,contentDetails"]
        assert not {"q", "channelId", "type", "order"} & set(query)
        page = "uploads_page2" if query.get("pageToken") == ["EAAaBlBUOkNBSQ"] else "uploads_page1"
        return ok(fixture(f"youtube/{page}.json"))

    server.routes["/youtube/v3/playlistItems"] = uploads
    server.routes["/youtube/v3/videos"] = lambda handler: ok(fixture("youtube/videos_statistics.json"))
    return "/youtube/v3/playlistItems"


def _reddit(server: FeedServer, monkeypatch) -> str:
    monkeypatch.setenv("OBSERVATORY_REDDIT_API", server.base_url)
    pages = {None: ok(fixture("reddit/page1.json")), "t3_a1": ok(fixture("reddit/page3_empty.json"))}
    replay(server, "/user/nordlys/submitted.json", "after", pages)
    return "/user/nordlys/submitted.json"


#: platform: (the actor's handle there, the loopback API, the posts its feed holds)
FOLLOWED = {
    "telegram": ("dr_nyheder", _telegram, 4),
    "youtube": (CHANNEL_ID, _youtube, 3),  # and a private video, skipped
    "reddit": ("nordlys", _reddit, 2),
}


def _catalog(tmp_path, presences: list[dict]):
    actors = {"actors": [{"name": "DR", "kind": "media", "public_figure": True, "presences": presences}],
              "lists": [{"name": "media", "members": ["DR"]}]}  # fmt: skip
    write(tmp_path / "sources" / "actors" / "media.yaml", json.dumps(actors))
    design = {"name": "media-watch", "actor_lists": ["media"], "budget": {"credits": 10_000}}  # YouTube's quota units
    write(tmp_path / "sources" / "catalog.yaml", json.dumps({"designs": [design]}))
    return str(tmp_path / "sources")


@pytest.fixture
def keys(monkeypatch, database_url):
    monkeypatch.setenv("OBSERVATORY_PSEUDONYM_KEY", "a-test-key-of-enough-length")
    monkeypatch.setenv("OBSERVATORY_DATABASE_URL", database_url)  # the YouTube key pool lives in the database
    monkeypatch.setenv("OBSERVATORY_SECRET_KEY", "z" * 43 + "=")


@pytest.mark.parametrize("platform", sorted(FOLLOWED))
def test_a_followed_actors_own_feed_is_polled_ingested_and_linked(
    platform, engine, store, client, server, tmp_path, monkeypatch, keys
):
    handle, serve, posts = FOLLOWED[platform]
    path = serve(server, monkeypatch)
    catalog, actors = sync_sources(engine, _catalog(tmp_path, [{"platform": platform, "handle": handle}]))
    assert (catalog.sources, actors.actors) == (1, 1)

    report, ingested = cycle(engine, store, client)
    assert [result.loaded for result in ingested] == [posts], report
    assert all(asked.startswith(path) or asked.startswith("/youtube/v3/videos") for asked, _ in server.requests)
    [run_id] = report.runs.values()
    with engine.begin() as conn:
        link_items(conn, author_pseudonym_key(), run_id=run_id)
        source, design = conn.execute(
            text("""SELECT s.name, qd.name FROM query_design_sources qs JOIN sources s ON s.id = qs.source_id
                    JOIN query_designs qd ON qd.id = qs.query_design_id""")
        ).one()
        linked = conn.execute(
            text("SELECT count(*) FROM item_actors WHERE role = 'author' AND method = 'presence'")
        ).scalar_one()
        handles = conn.execute(text("SELECT DISTINCT author_handle FROM raw_items")).scalars().all()
    assert (source, design) == (f"{platform}.{handle}", "media-watch")
    assert linked == posts and handles == [handle]  # a public figure's handle is kept in clear


def test_presences_without_an_author_feed_are_not_followed_and_a_handle_the_api_refuses_is_one_line(
    engine, tmp_path, monkeypatch, keys
):
    presences = [{"platform": p, "handle": h} for p, (h, _, _) in FOLLOWED.items()]
    presences += [{"platform": "bluesky", "handle": "dr.dk"}, {"platform": "web", "handle": "dr.dk"}]
    catalog, _ = sync_sources(engine, _catalog(tmp_path, presences))
    assert catalog.sources == 4  # bluesky, telegram, youtube, reddit: the web has no author feed here
    with engine.connect() as conn:
        urls = dict(conn.execute(text("SELECT name, url FROM sources")).all())
    assert urls["youtube." + CHANNEL_ID].startswith("https://www.googleapis.com/youtube/v3/playlistItems?")
    with engine.connect() as conn:
        cost = conn.execute(
            text("SELECT cost_per_request FROM sources WHERE name = :n"), {"n": "youtube." + CHANNEL_ID}
        )
        assert float(cost.scalar_one()) == 4  # two pages of 1 + 1 quota units (a search's two would be 202)
    assert urls["reddit.nordlys"].startswith("https://www.reddit.com/user/nordlys/submitted.json")
    assert urls["telegram.dr_nyheder"] == "https://t.me/s/dr_nyheder"

    wrong = _catalog(tmp_path, [{"platform": "youtube", "handle": "DR Nyheder".replace(" ", "")}])
    with pytest.raises(CatalogError) as refused:
        sync_sources(engine, wrong)
    message = str(refused.value)
    assert "\n" not in message and message.startswith("actors/media.yaml: field actors.DR.presences.0.handle")
    assert message.endswith(
        "youtube handle 'DRNyheder' cannot be followed: not a YouTube channel id (UC and 22 letters, digits, - or _)"
    )
