"""The ingest hot path's shortcuts (presence read only from rows that state any, one author verdict per
run and author) give exactly what the general code gives."""

import random

from observatory_assets.defs.ingestion.normalizing import (
    COUNT_PATHS,
    HANDLE_FIELDS,
    NO_PRESENCE,
    PRESENCE_FIELDS,
    Presence,
    read_presence,
)
from observatory_assets.defs.ingestion.payload_reader import RememberedAuthors
from observatory_assets.lib.pseudonyms import AuthorPolicy, author_pseudonym


def test_every_field_presence_reads_is_one_the_shortcut_looks_for():
    for paths in COUNT_PATHS.values():
        for path in paths:
            assert path.split(",")[0] in PRESENCE_FIELDS
    assert {*HANDLE_FIELDS, "platform", "content_type"} <= PRESENCE_FIELDS


def test_a_row_stating_no_presence_takes_the_shortcut_and_one_stating_any_does_not():
    notes: set[str] = set()
    assert read_presence({"id": "1", "title": "t", "text": "x", "author": "a", "story": 3}, notes) is NO_PRESENCE
    assert NO_PRESENCE == Presence()
    nested = read_presence({"title": "t", "stats": {"playCount": "12", "diggCount": 3}}, notes)
    assert (nested.views, nested.likes, nested.shares) == (12, 3, None)
    assert read_presence({"screen_name": " @someone "}, notes).author_handle == "@someone"
    assert read_presence({"platform": "TikTok"}, notes).platform == "tiktok"


def _policies() -> list[AuthorPolicy]:
    key = b"k" * 32
    public = frozenset({author_pseudonym(key, "bluesky", "famous.example"), author_pseudonym(key, "jsonl", "Ann Lee")})
    return [AuthorPolicy(key), AuthorPolicy(key, clear=True), AuthorPolicy(key, public=public)]


def test_remembered_author_verdicts_equal_the_policy_on_every_row():
    rng = random.Random(5)
    authors = [None, "", "Ann Lee", "Bo Ek", "  ", "famous.example"]
    handles = [None, "famous.example", "@bo", "ann"]
    for policy in _policies():
        remembered = RememberedAuthors(policy, limit=3)  # small: the verdicts are forgotten and worked out again
        for _ in range(400):
            platform = rng.choice(["jsonl", "bluesky", None])
            author, handle = rng.choice(authors), rng.choice(handles)
            metadata = {"author_name": author, "story": rng.randrange(3), "did": "did:x", "lang": "da"}
            expected = policy.apply(platform, author, handle, dict(metadata))
            assert remembered.apply(platform, author, handle, dict(metadata)) == expected
