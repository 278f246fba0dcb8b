"""A deterministic generator of realistic collector output for the demo, tests and benchmarks.

The demo sample (:func:`write_demo_dataset`) tells the original stories of ``sample_stories/stories.yaml``:
each is one event, told in one language by several sources with its own headlines and facts, and
``sample_stories/labels.csv`` records which story each item tells, so the demo can score its events.
The benchmark generator (:func:`iter_items`) composes any number of template stories instead.

Several sources (Danish and English; RSS, Atom, JSONL, CSV) report a set of news
*stories*: each story is retold by many sources with paraphrased headlines,
some items are exact duplicates (the same id again, or the same text under a
new id), some near duplicates, and a share of rows is bad in the ways real
collectors are (invalid JSON or UTF-8, NUL bytes, missing, unparseable or
future dates, broken CSV rows, hostile HTML/SQL strings). The same seed always
gives the same bytes; JSONL output streams, so a million items cost no memory.
"""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from xml.sax.saxutils import escape

from observatory_assets.lib.yaml_files import read_yaml_mapping

DEFAULT_ANCHOR = datetime(2026, 11, 16, 12, 0, tzinfo=UTC)

_EN = {
    "actors": [
        "The government",
        "Parliament",
        "The central bank",
        "City council",
        "Health authorities",
        "Union leaders",
        "The energy agency",
        "Police",
        "Researchers",
        "Farmers",
    ],
    "actions": [
        ("announces", "unveils", "presents"),
        ("rejects", "votes down", "turns down"),
        ("warns about", "raises alarm over", "cautions on"),
        ("investigates", "opens inquiry into", "probes"),
        ("approves", "backs", "green-lights"),
    ],
    "topics": [
        "new climate plan",
        "interest rates",
        "housing prices",
        "wind farm expansion",
        "hospital waiting lists",
        "rail strike",
        "drought damage",
        "school reform",
        "data breach",
        "bird flu outbreak",
    ],
    "places": ["Copenhagen", "Aarhus", "London", "Brussels", "Odense", "Manchester", "Aalborg", "Berlin"],
}
_DA = {
    "actors": [
        "Regeringen",
        "Folketinget",
        "Nationalbanken",
        "Byrådet",
        "Sundhedsstyrelsen",
        "Fagbevægelsen",
        "Energistyrelsen",
        "Politiet",
        "Forskere",
        "Landmænd",
    ],
    "actions": [
        ("præsenterer", "fremlægger", "lancerer"),
        ("afviser", "stemmer nej til", "forkaster"),
        ("advarer om", "slår alarm over", "bekymrer sig om"),
        ("undersøger", "indleder undersøgelse af", "granskner"),
        ("godkender", "bakker op om", "vedtager"),
    ],
    "topics": [
        "ny klimaplan",
        "renten",
        "boligpriserne",
        "udbygning af vindmøller",
        "ventelister på hospitaler",
        "togstrejke",
        "tørkeskader",
        "skolereform",
        "datalæk",
        "fugleinfluenza",
    ],
    "places": ["København", "Aarhus", "London", "Bruxelles", "Odense", "Manchester", "Aalborg", "Berlin"],
}
_FILLER = {
    "en": (
        "Officials said the decision followed months of debate. Critics argued the measures go too far, "
        "while supporters said they were long overdue. More details are expected later this week. "
    ),
    "da": (
        "Ifølge embedsfolk kommer beslutningen efter måneders debat. Kritikere mener, at tiltagene går for vidt, "
        "mens tilhængere siger, at de er længe ventede. Flere detaljer ventes senere på ugen. "
    ),
}

_DETAIL_WORDS = {
    "en": "minister mayor budget vote report sources morning evening analysts residents officials statement "
    "spokesperson figures survey critics plan deadline crisis talks agreement".split(),
    "da": "minister borgmester budget afstemning rapport kilder morgen aften analytikere borgere embedsfolk udtalelse "
    "talsperson tal undersøgelse kritikere plan frist krise forhandlinger aftale".split(),
}

#: (name, format, language, credibility)
SOURCES = [
    ("dr-nyheder", "rss", "da", 0.9),
    ("politiken", "atom", "da", 0.85),
    ("bbc-world", "rss", "en", 0.9),
    ("guardian-api", "jsonl", "en", 0.85),
    ("social-stream", "jsonl", "mixed", 0.4),
    ("wire-service", "csv", "mixed", 0.8),
]


@dataclass(frozen=True)
class Story:
    """A news story: who does what, where; told in Danish and English."""

    story_id: int
    actor: int
    action: int
    topic: int
    place: int
    at: datetime

    def headline(self, language: str, variant: int) -> str:
        vocab = _DA if language == "da" else _EN
        verb = vocab["actions"][self.action][variant % 3]
        actor, topic, place = vocab["actors"][self.actor], vocab["topics"][self.topic], vocab["places"][self.place]
        forms = [f"{actor} {verb} {topic} in {place}", f"{place}: {actor} {verb} {topic}", f"{actor} {verb} {topic}"]
        if language == "da":
            forms = [f"{actor} {verb} {topic} i {place}", f"{place}: {actor} {verb} {topic}", f"{actor} {verb} {topic}"]
        return forms[variant % len(forms)]


def make_stories(count: int, rng: random.Random, anchor: datetime, days: int = 30) -> list[Story]:
    """``count`` distinct stories spread over the ``days`` before ``anchor``."""
    combos = set()
    stories = []
    while len(stories) < count:
        combo = (rng.randrange(10), rng.randrange(5), rng.randrange(10), rng.randrange(8))
        if combo in combos and len(combos) < 4000:
            continue
        combos.add(combo)
        at = anchor - timedelta(days=rng.uniform(0, days))
        stories.append(Story(len(stories), *combo, at=at))
    return stories


def _item(story: Story, source: str, language: str, rng: random.Random, n: int, text_chars: int) -> dict:
    variant = rng.randrange(9)
    headline = story.headline(language, variant)
    filler = _FILLER[language]
    detail = " ".join(rng.choice(_DETAIL_WORDS[language]) for _ in range(10))
    figure = f"{rng.randrange(2, 98)} {'procent' if language == 'da' else 'percent'}"
    body = (f"{headline}. {detail.capitalize()}, {figure}. " + filler * (text_chars // len(filler) + 1))[:text_chars]
    published = story.at + timedelta(minutes=rng.uniform(0, 36 * 60))
    return {
        "id": f"{source}-{n}",
        "title": headline,
        "text": body,
        "url": f"https://{source}.example/news/{story.story_id}/{n}?utm_source=feed",
        "author": f"{rng.choice(['Anna', 'Mads', 'Sofie', 'James', 'Emma', 'Lars'])} {rng.choice(['Jensen', 'Smith', 'Nielsen', 'Brown'])}",
        "published_at": published.isoformat(),
        "language": language,
        "story": story.story_id,
    }


_HOSTILE = [
    ("<script>alert('x')</script>Breaking", "<img src=x onerror=alert(1)> body"),
    ("Robert'); DROP TABLE raw_items;--", "'; DELETE FROM sources; --"),
    ('=HYPERLINK("http://evil.example")', "+cmd|' /C calc'!A0"),
]


def iter_items(
    n: int,
    seed: int = 7,
    anchor: datetime = DEFAULT_ANCHOR,
    language: str = "mixed",
    source: str = "bench",
    text_chars: int = 1000,
    duplicate_rate: float = 0.05,
    bad_rate: float = 0.01,
) -> Iterator[str]:
    """``n`` JSONL lines: realistic items, ``duplicate_rate`` exact duplicates, ``bad_rate`` bad rows."""
    rng = random.Random(seed)
    stories = make_stories(max(10, n // 20), rng, anchor)
    recent: list[str] = []
    for i in range(n):
        roll = rng.random()
        if roll < bad_rate:
            yield _bad_jsonl_row(i, rng)
            continue
        if roll < bad_rate + duplicate_rate and recent:
            yield rng.choice(recent)
            continue
        lang = rng.choice(["da", "en"]) if language == "mixed" else language
        line = json.dumps(_item(rng.choice(stories), source, lang, rng, i, text_chars), ensure_ascii=False)
        if len(recent) < 1000:
            recent.append(line)
        else:
            recent[rng.randrange(1000)] = line
        yield line


def _bad_jsonl_row(i: int, rng: random.Random) -> str:
    kind = i % 5
    if kind == 0:
        return '{"id": "broken-%d", "title": "unterminated' % i
    if kind == 1:
        return json.dumps({"id": f"nodate-{i}", "title": f"Undated item {i}", "published_at": "sometime soon"})
    if kind == 2:
        return json.dumps(
            {"id": f"future-{i}", "title": f"From the future {i}", "published_at": "2199-01-01T00:00:00Z"}
        )
    if kind == 3:
        return json.dumps({"id": f"empty-{i}", "title": "", "text": ""})
    return "[1, 2, 3]"


def write_jsonl(path: Path, lines: Iterator[str]) -> int:
    """Stream ``lines`` to ``path``; returns how many were written."""
    count = 0
    with open(path, "w", encoding="utf-8", newline="\n") as out:
        for line in lines:
            out.write(line + "\n")
            count += 1
    return count


def _rss(items: list[dict], title: str, language: str) -> str:
    entries = "".join(
        f"<item><guid>{escape(it['id'])}</guid><title>{escape(it['title'])}</title>"
        f"<link>{escape(it['url'])}</link><description>{escape('<p>' + it['text'] + '</p>')}</description>"
        f"<author>{escape(it['author'])}</author>"
        + (
            f"<pubDate>{format_datetime(datetime.fromisoformat(it['published_at']))}</pubDate>"
            if it.get("published_at")
            else ""
        )
        + "</item>"
        for it in items
    )
    return (
        f'<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>{escape(title)}</title>'
        f"<language>{language}</language><link>https://example.org/</link><description>demo</description>"
        f"{entries}</channel></rss>"
    )


def _atom(items: list[dict], title: str) -> str:
    entries = "".join(
        f"<entry><id>{escape(it['id'])}</id><title>{escape(it['title'])}</title>"
        f'<link href="{escape(it["url"])}"/><summary>{escape(it["text"])}</summary>'
        f"<author><name>{escape(it['author'])}</name></author><updated>{it['published_at']}</updated></entry>"
        for it in items
    )
    return (
        f'<?xml version="1.0" encoding="utf-8"?><feed xmlns="http://www.w3.org/2005/Atom">'
        f"<title>{escape(title)}</title><id>urn:demo:{escape(title)}</id><updated>2026-11-16T12:00:00Z</updated>"
        f"{entries}</feed>"
    )


#: The demo's stories (original text, CC0; see the README beside it) and which story each sample item tells.
SAMPLE_STORIES = Path(__file__).resolve().parents[2] / "sample_stories"
STORIES_FILE = SAMPLE_STORIES / "stories.yaml"
LABELS_FILE = SAMPLE_STORIES / "labels.csv"


@dataclass(frozen=True)
class SampleStory:
    """One story of the demo sample: told in one language, from its first telling ``at`` on; a brief is told
    once (a brief may tell a story of the sample in the other language: it has that story's id)."""

    story_id: str
    language: str
    at: datetime
    headlines: tuple[str, ...]
    facts: tuple[str, ...]
    brief: bool = False


def load_sample_stories(anchor: datetime = DEFAULT_ANCHOR, path: Path = STORIES_FILE) -> list[SampleStory]:
    """The stories of ``stories.yaml``, dated relative to ``anchor`` (stories first, then the briefs)."""
    document = read_yaml_mapping(path, ValueError, "a mapping with stories and briefs")

    def at(entry: dict) -> datetime:
        return (anchor - timedelta(days=entry["day"])).replace(hour=entry["hour"], minute=0, second=0, microsecond=0)

    stories = [SampleStory(s["id"], s["language"], at(s), tuple(s["headlines"]), tuple(s["facts"]))
               for s in document["stories"]]  # fmt: skip
    briefs = [SampleStory(b.get("story", b["id"]), b["language"], at(b), (b["headline"],), (b["fact"],), brief=True)
              for b in document["briefs"]]  # fmt: skip
    return stories + briefs


def _telling(story: SampleStory, source: str, rng: random.Random, n: int) -> dict:
    """One outlet's telling of ``story``: one of its headlines, its facts in some order, within 30 hours."""
    facts = rng.sample(story.facts, len(story.facts))[: rng.randrange(1, len(story.facts) + 1)]
    published = story.at + timedelta(minutes=0 if story.brief else rng.uniform(0, 30 * 60))
    return {
        "id": f"{source}-{n}",
        "title": rng.choice(story.headlines),
        "text": " ".join(facts),
        "url": f"https://{source}.example/news/{story.story_id}/{n}?utm_source=feed",
        "author": f"{rng.choice(['Anna', 'Mads', 'Sofie', 'James', 'Emma', 'Lars'])} {rng.choice(['Jensen', 'Smith', 'Nielsen', 'Brown'])}",
        "published_at": published.isoformat(),
        "language": story.language,
        "story": story.story_id,
    }


def _source_items(name: str, language: str, count: int, stories: list[SampleStory], rng: random.Random) -> list[dict]:
    """``count`` tellings of the stories in ``language`` (both for a mixed source), and the briefs that fall
    to this source: each brief is told once, by the first source of its language."""
    told = [s for s in stories if not s.brief and language in ("mixed", s.language)]
    items = [_telling(rng.choice(told), name, rng, n) for n in range(count)]
    first_of = {}
    for source, _, lang, _ in SOURCES:
        first_of.setdefault(lang, source)
    briefs = [s for s in stories if s.brief and first_of.get(s.language) == name]
    return items + [_telling(b, name, rng, count + k) for k, b in enumerate(briefs)]


def write_demo_dataset(
    out_dir: Path,
    items_per_source: int = 60,
    seed: int = 7,
    anchor: datetime = DEFAULT_ANCHOR,
    labels: Path | None = None,
) -> list[tuple[str, str, Path]]:
    """Write one payload per demo source into ``out_dir``; returns (source, format, path) triples.

    Every item tells one of the sample stories (``stories.yaml``), each told by several sources in its
    language; each payload also holds the bad rows real collectors meet. With ``labels``, writes which story
    each item tells there (``source, id, story``; a hostile row tells none of them: its own label).
    """
    rng = random.Random(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    stories = load_sample_stories(anchor)
    written, told = [], []
    for name, fmt, language, _credibility in SOURCES:
        items = _source_items(name, language, items_per_source, stories, rng)
        # exact duplicates: the same id again, and the same content under another id
        items.append(dict(items[0]))
        items.append({**items[1], "id": f"{name}-copy-of-1", "url": items[1]["url"] + "&copy=1"})
        title, body = _HOSTILE[len(written) % len(_HOSTILE)]
        items.append({**items[2], "id": f"{name}-hostile", "title": title, "text": body, "story": f"{name}-hostile"})
        written.append((name, fmt, _write_payload(out_dir, name, fmt, language, items, rng)))
        told += list({it["id"]: (name, it["id"], it["story"]) for it in items}.values())
    malformed = out_dir / "broken-feed.xml"
    malformed.write_text("<html><body><h1>502 Bad Gateway</h1></body></html>", encoding="utf-8")
    written.append(("broken-feed", "rss", malformed))
    if labels is not None:
        with open(labels, "w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(["source", "id", "story"])
            writer.writerows(told)
    return written


def _write_payload(out_dir: Path, name: str, fmt: str, language: str, items: list[dict], rng: random.Random) -> Path:
    """One source's payload in its format, with that format's bad rows."""
    path = out_dir / f"{name}.{ {'rss': 'xml', 'atom': 'atom', 'jsonl': 'jsonl', 'csv': 'csv'}[fmt] }"
    if fmt == "rss":
        items.append({**items[3], "id": f"{name}-undated", "published_at": None})
        path.write_text(_rss(items, name, language), encoding="utf-8")
    elif fmt == "atom":
        path.write_text(_atom(items, name), encoding="utf-8")
    elif fmt == "jsonl":
        lines = [json.dumps(it, ensure_ascii=False) for it in items]
        lines += [_bad_jsonl_row(k, rng) for k in range(5)]
        lines.append(
            json.dumps({"id": f"{name}-nul", "title": "NUL\u0000in title", "published_at": items[0]["published_at"]})
        )
        data = ("\n".join(lines) + "\n").encode("utf-8") + b'{"id": "latin1", "title": "K\xf8benhavn"}\n'
        path.write_bytes(data)
    else:
        with open(path, "w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle)
            header = ["id", "title", "text", "url", "author", "published_at", "language"]
            writer.writerow(header)
            for it in items:
                writer.writerow([it[h] for h in header])
            writer.writerow(["broken-row", "Too few fields"])
    return path


def sample_story_labels(path: Path = LABELS_FILE) -> dict[tuple[str, str], str]:
    """Which story each item of the bundled sample tells: (source name, external id) → story id."""
    with open(path, newline="", encoding="utf-8") as handle:
        return {(row["source"], row["id"]): row["story"] for row in csv.DictReader(handle)}
