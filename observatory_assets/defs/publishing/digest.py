"""The daily digest: what a day's publication holds, rendered to safe HTML.

A digest of a UTC day holds the day's top events (ranked by distinct sources, then size, then
novelty: the most recently first seen) with their canonical title, extractive summary and links to
the day's source items, and the day's trend moves. A move covers the day (from the end of the day
before to the end of the day, UTC) and is computed from the evidence ledger, as the chart beside it
(the 90 days up to the day's end) and the evidence it counts are: all three agree, whichever days
were snapshotted. Trends without evidence by the day's end are not shown. Items withdrawn by a
takedown are left out of everything, and an event whose canonical item is withdrawn shows the title
of its first remaining item and no summary (the summary quotes the withdrawn item). An evidence line
is shown only while its event keeps an item that is not withdrawn.

Rendering is Jinja2 with autoescape on, then nh3 with an allow-list: no ``<script>``, no ``on*``
attributes, no ``javascript:`` or ``data:`` URLs and no external resources. The one exception is a
trend chart drawn from our own ledger, inlined as a ``data:image/png`` URI that the sanitizer lets
through only when it is exactly one of the charts this digest rendered.
"""

from __future__ import annotations

import base64
import hashlib
import inspect
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import jinja2
import nh3
from sqlalchemy import Connection, text

from observatory_assets.defs.trends.charts import ledger_chart
from observatory_assets.defs.trends.ledger import log_odds_at, probability
from observatory_assets.lib.takedowns import item_withdrawn_sql
from resources.object_store import ObjectStore

#: Events shown in one digest.
DEFAULT_EVENT_LIMIT = 50
#: Source-item links shown per event (every item of the event counts towards its record's items).
LINKS_PER_EVENT = 5
SITE_TITLE = "Observatory"

ALLOWED_TAGS = {
    "a", "article", "div", "em", "figcaption", "figure", "h1", "h2", "h3", "header", "img", "li", "ol", "p",
    "section", "small", "span", "strong", "time", "ul",
}  # fmt: skip
ALLOWED_ATTRIBUTES = {
    "a": {"href", "title"},
    "img": {"src", "alt", "width", "height"},
    "time": {"datetime"},
    "*": {"class"},
}

_TEMPLATES = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


@dataclass(frozen=True)
class DigestItem:
    item_id: int
    title: str
    url: str | None
    source: str
    #: The platform the item was published on (the item's ``platform`` column).
    platform: str | None = None


@dataclass(frozen=True)
class DigestEvent:
    event_id: int
    title: str
    summary: str | None
    source_count: int
    item_count: int
    first_seen_at: datetime
    links: tuple[DigestItem, ...]
    item_ids: tuple[int, ...]
    sentiment: SentimentBalance | None = None


@dataclass(frozen=True)
class SentimentBalance:
    """The tone of an event's items shown that day: mean score in [−1, 1] and label counts."""

    mean_score: float
    negative: int
    neutral: int
    positive: int


@dataclass(frozen=True)
class TrendMove:
    """How a trend moved over ``since`` … ``until`` (the digest's UTC day), from its ledger."""

    name: str
    title: str
    since: datetime
    until: datetime
    probability: float  # at ``until``
    change: float  # in log-odds from ``since`` to ``until``
    evidence_count: int  # live evidence lines with an event time in the interval
    evidence: str | None  # the strongest of them whose event still shows an item
    chart_uri: str | None = None

    @property
    def moved(self) -> bool:
        """Whether the interval's evidence moved the trend, as shown (two decimals of log-odds); a trend
        without new evidence, or whose evidence cancels out, is shown as unchanged."""
        return self.evidence_count > 0 and round(abs(self.change), 2) > 0

    @property
    def drift(self) -> float:
        """The move without new evidence: older evidence fading towards the baseline (0 when it moved)."""
        return 0.0 if self.moved else round(self.change, 2) + 0.0


@dataclass
class Digest:
    """One day's digest; ``item_ids`` are every item it shows (for takedowns to find it)."""

    day: date
    events: list[DigestEvent] = field(default_factory=list)
    trends: list[TrendMove] = field(default_factory=list)

    @property
    def title(self) -> str:
        return f"{SITE_TITLE} digest, {self.day:%d %B %Y}"

    @property
    def item_ids(self) -> list[int]:
        return sorted({i for e in self.events for i in e.item_ids})

    @property
    def empty(self) -> bool:
        return not self.events and not self.trends


def day_bounds(day: date) -> tuple[datetime, datetime]:
    start = datetime.combine(day, time(), tzinfo=UTC)
    return start, start + timedelta(days=1)


_TOP_EVENTS = f"""
WITH day_items AS (
    SELECT ei.event_id, ei.item_id, ei.source_id, r.sentiment_label, r.sentiment_score
      FROM event_items ei JOIN raw_items r ON r.id = ei.item_id
     WHERE ei.item_time >= :start AND ei.item_time < :end AND NOT {item_withdrawn_sql("ei.item_id")}
), ranked AS (
    SELECT event_id, count(DISTINCT source_id) AS sources, count(*) AS items, array_agg(item_id) AS item_ids,
           round(avg(sentiment_score)::numeric, 2)::float AS mean_sentiment,
           count(*) FILTER (WHERE sentiment_label = 'negative') AS negative,
           count(*) FILTER (WHERE sentiment_label = 'neutral') AS neutral,
           count(*) FILTER (WHERE sentiment_label = 'positive') AS positive
      FROM day_items GROUP BY event_id
)
SELECT e.id, e.title, e.summary, e.first_seen_at, r.sources, r.items, r.item_ids,
       r.mean_sentiment, r.negative, r.neutral, r.positive,
       e.canonical_item_id IS NOT NULL AND NOT {item_withdrawn_sql("e.canonical_item_id")} AS canonical_shown
  FROM ranked r JOIN events e ON e.id = r.event_id
 ORDER BY r.sources DESC, r.items DESC, e.first_seen_at DESC, e.id
 LIMIT :limit
"""

#: The links of the items ``{item_ids}`` (an array expression).
_EVENT_LINKS = """
SELECT ei.event_id, r.id, coalesce(nullif(r.title, ''), left(r.text, 120), '') AS title, r.url, s.name,
       r.platform
  FROM event_items ei JOIN raw_items r ON r.id = ei.item_id JOIN sources s ON s.id = r.source_id
 WHERE ei.item_id = ANY({item_ids})
 ORDER BY ei.event_id, ei.item_time, r.id
"""

#: Per active trend with evidence by the day's end: the day's evidence (``:start`` < event time <= ``:end``,
#: as the ledger counts a day) and a hash of everything its state and chart are computed from.
_TREND_MOVES = f"""
SELECT t.id, t.name, coalesce(nullif(t.title, ''), t.name) AS title,
       count(ev.id) FILTER (WHERE ev.event_at > :start) AS evidence_count,
       (SELECT e.reasoning FROM trend_evidence e
         WHERE e.trend_id = t.id AND e.retracted_at IS NULL AND e.event_at > :start AND e.event_at <= :end
           AND EXISTS (SELECT 1 FROM event_items ei
                        WHERE ei.event_id = e.event_id AND NOT {item_withdrawn_sql("ei.item_id")})
         ORDER BY abs(e.delta_log_odds) DESC, e.id LIMIT 1) AS evidence,
       md5(concat_ws('|', t.baseline_log_odds, t.half_life_hours, t.horizon,
                     string_agg(concat_ws(':', ev.id, ev.event_at, ev.delta_log_odds), ',' ORDER BY ev.id)))
           AS ledger_md5
  FROM trends t
  JOIN trend_evidence ev ON ev.trend_id = t.id AND ev.retracted_at IS NULL AND ev.event_at <= :end
 WHERE t.active
 GROUP BY t.id
"""


def _trend_moves(conn: Connection, day: date, inline_charts: bool) -> list[TrendMove]:
    """The day's moves from the ledger, largest first, then the trends that did not move."""
    start, end = day_bounds(day)
    rows = conn.execute(text(_TREND_MOVES), {"start": start, "end": end}).all()
    state = log_odds_at(conn, [(r.id, at) for r in rows for at in (start, end)])
    moves = [
        TrendMove(
            name=r.name,
            title=r.title,
            since=start,
            until=end,
            probability=probability(state[(r.id, end)]),
            change=state[(r.id, end)] - state[(r.id, start)],
            evidence_count=r.evidence_count,
            evidence=r.evidence,
            chart_uri=_chart_uri(ledger_chart(conn, r.id, r.title, day)) if inline_charts else None,
        )
        for r in rows
    ]
    return sorted(moves, key=lambda m: (not m.moved, -abs(m.change), m.name))


def _chart_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


#: What the rendering is made of: a change to the templates, to this module or to the charts' drawing
#: renders every digest anew.
RENDERER_VERSION = hashlib.sha256(
    b"".join(
        path.read_bytes()
        for path in [
            Path(__file__),
            Path(inspect.getfile(ledger_chart)),
            *sorted((Path(__file__).parent / "templates").glob("*.j2")),
        ]
    )
).hexdigest()

#: The rows load_digest builds a digest from, by the same queries, hashed on the server in one statement
#: (parameters: :func:`source_parameters`); :func:`source_fingerprint` completes the fingerprint.
SOURCE_ROWS = f"""
WITH top AS ({_TOP_EVENTS}), moves AS ({_TREND_MOVES})
SELECT md5(concat_ws(' | ',
           (SELECT string_agg(t::text, ',' ORDER BY t.id) FROM top t),
           (SELECT string_agg(l::text, ',' ORDER BY l.event_id, l.id)
              FROM ({_EVENT_LINKS.format(item_ids="ARRAY(SELECT unnest(item_ids) FROM top)")}) l),
           (SELECT string_agg(m::text, ',' ORDER BY m.name) FROM moves m))) AS rows_md5,
       ARRAY(SELECT name FROM moves ORDER BY name) AS trend_names
"""


def source_parameters(day: date, limit: int = DEFAULT_EVENT_LIMIT) -> dict:
    start, end = day_bounds(day)
    return {"start": start, "end": end, "limit": limit, "day": day}


def source_fingerprint(
    rows_md5: str, trend_names: list[str], store: ObjectStore | None = None, limit: int = DEFAULT_EVENT_LIMIT
) -> str:
    """A fingerprint of everything :func:`load_digest` with the same arguments and the renderer would turn into
    the digest, from what :data:`SOURCE_ROWS` returned: equal fingerprints give the same HTML, so an
    unchanged digest need not be rendered again to be recognized. With ``store`` the charts of
    ``trend_names`` are inlined (drawn from the ledger rows the hash covers)."""
    charts = ",".join(trend_names) if store is not None else ""
    return hashlib.sha256(f"{RENDERER_VERSION}|{limit}|{rows_md5}|charts:{charts}".encode()).hexdigest()


def _balance(row) -> SentimentBalance | None:
    if row.mean_sentiment is None:
        return None
    return SentimentBalance(row.mean_sentiment, row.negative, row.neutral, row.positive)


def load_digest(
    conn: Connection, day: date, store: ObjectStore | None = None, limit: int = DEFAULT_EVENT_LIMIT
) -> Digest:
    """The digest of ``day`` from the database (withdrawn items excluded). With ``store`` (the static site)
    the trend charts are inlined; without it (Ghost) they are left out."""
    start, end = day_bounds(day)
    rows = conn.execute(text(_TOP_EVENTS), {"start": start, "end": end, "limit": limit}).all()
    links: dict[int, list[DigestItem]] = {}
    item_ids = [i for row in rows for i in row.item_ids]
    for event_id, item_id, title, url, source, platform in conn.execute(
        text(_EVENT_LINKS.format(item_ids=":ids")), {"ids": item_ids}
    ):
        links.setdefault(event_id, []).append(DigestItem(item_id, title, url, source, platform))
    events = []
    for row in rows:
        event_links = links.get(row.id, [])
        title = row.title if row.canonical_shown and row.title else (event_links[0].title if event_links else "")
        events.append(
            DigestEvent(
                event_id=row.id,
                title=title or f"Event {row.id}",
                summary=row.summary if row.canonical_shown else None,
                source_count=row.sources,
                item_count=row.items,
                first_seen_at=row.first_seen_at,
                links=tuple(event_links[:LINKS_PER_EVENT]),
                item_ids=tuple(sorted(row.item_ids)),
                sentiment=_balance(row),
            )  # fmt: skip
        )
    trends = _trend_moves(conn, day, inline_charts=store is not None)
    return Digest(day, events, trends)


def sanitize(html: str, trusted_images: frozenset[str] = frozenset()) -> str:
    """Reduce HTML to the allow-list: structure, text and links only. An ``<img>`` keeps its ``src``
    only when it is one of ``trusted_images`` (our own inlined charts)."""

    def keep(element: str, attribute: str, value: str) -> str | None:
        if attribute in ("src", "href") and value.strip().lower().startswith("data:"):
            return value if element == "img" and attribute == "src" and value in trusted_images else None
        if element == "img" and attribute == "src":
            return None  # no external resources
        return value

    return nh3.clean(
        html,
        tags=ALLOWED_TAGS,
        attributes=ALLOWED_ATTRIBUTES,
        url_schemes={"http", "https", "mailto", "data"},
        attribute_filter=keep,
        link_rel="noopener noreferrer nofollow",
        strip_comments=True,
    )


def render_fragment(digest: Digest) -> str:
    """The digest's body HTML (for the page, the feeds and the Ghost HTML card), sanitized."""
    html = _TEMPLATES.get_template("digest.html.j2").render(digest=digest)
    trusted = frozenset(t.chart_uri for t in digest.trends if t.chart_uri)
    return sanitize(html, trusted)


def render_page(title: str, fragment: str, home: str = "../index.html") -> str:
    """A self-contained page (inline CSS, readable on a phone) around sanitized ``fragment``."""
    return _TEMPLATES.get_template("page.html.j2").render(title=title, body=fragment, home=home)


def render_index(entries: list[dict]) -> str:
    """The site's home page: every live digest, newest first (``entries`` are already sorted)."""
    body = sanitize(_TEMPLATES.get_template("index.html.j2").render(entries=entries, site_title=SITE_TITLE))
    return render_page(f"{SITE_TITLE} digests", body, home="index.html")


def content_hash(fragment: str) -> str:
    """SHA-256 of what is sent to a target: equal hashes mean the target already shows it."""
    return hashlib.sha256(fragment.encode("utf-8")).hexdigest()
