"""The actor co-occurrence network and its GEXF 1.3 writer."""

from __future__ import annotations

import hashlib
import hmac
import io
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, BinaryIO
from xml.sax.saxutils import escape, quoteattr

from sqlalchemy import text

from observatory_assets.defs.exports.filters import ExportFilterError, ExportFilters, driver_sql, selection
from resources.settings import platform_settings, variable

if TYPE_CHECKING:
    import networkx as nx

PSEUDONYM_KEY_VARIABLE = variable("pseudonym_key")
#: A (run, term) or event context with more authors than this links nobody: a term everyone
#: uses says nothing about who acts together, and its pairs grow with the square of its size.
MAX_AUTHORS_PER_CONTEXT = 500
_XML_ILLEGAL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


# ---------------------------------------------------------------- the actor network


def pseudonym(author: str, key: bytes) -> str:
    """A stable pseudonym for an author: keyed (HMAC-SHA256), so it cannot be reversed by
    hashing candidate names without the key."""
    return "actor-" + hmac.new(key, author.encode("utf-8"), hashlib.sha256).hexdigest()[:16]


def pseudonym_key(environ: dict[str, str] | None = None) -> bytes:
    """The pseudonymization key from ``OBSERVATORY_PSEUDONYM_KEY``; an error if it is unset or short."""
    secret = platform_settings(environ).pseudonym_key
    value = secret.get_secret_value() if secret else ""
    if len(value) < 16:
        raise ExportFilterError(
            f"pseudonymized networks need {PSEUDONYM_KEY_VARIABLE} set to a secret of at least 16 characters"
        )
    return value.encode("utf-8")


#: An item's author as the network shows it: the name where it is kept (a public figure, a design whose
#: authors are clear), else the pseudonym stored at rest.
_AUTHOR = "coalesce(nullif(btrim(r.author), ''), r.author_pseudonym)"
#: What the network reads of each selected item that has an author: the CTE ``sel`` of every statement.
_NETWORK_COLUMNS = (
    "r.id", f"{_AUTHOR} AS author", "r.collection_run_id", "r.search_terms_matched AS terms", "r.published_at",
    "s.name AS source", "r.language", "r.platform", "r.author_pseudonym",
)  # fmt: skip
_HAS_AUTHOR = f"{_AUTHOR} IS NOT NULL"

#: The metrics of the archive-wide actor network (``actor_network_nodes``, the actors domain's
#: ``actor_network`` asset) carried by each exported node, as GEXF node attributes: (id, GEXF type).
NETWORK_METRICS = (
    ("network_degree", "integer"),
    ("network_weighted_degree", "double"),
    ("network_betweenness", "double"),
    ("network_community", "integer"),
)

# An exported author is the network's node of the actor their items are linked to as author, else of
# their pseudonym (the node names ``actor_network`` gives); an author whose items map to several takes
# the most frequent.
_NETWORK_NODES = """
SELECT g.author, g.posts, g.sources, g.languages, g.platforms, g.first_at, g.last_at,
       n.degree, n.weighted_degree, n.betweenness, n.community
  FROM (
    SELECT author, count(*) AS posts,
           array_agg(DISTINCT source ORDER BY source) AS sources,
           coalesce(array_agg(DISTINCT language ORDER BY language) FILTER (WHERE language IS NOT NULL), '{}') AS languages,
           coalesce(array_agg(DISTINCT platform ORDER BY platform) FILTER (WHERE platform IS NOT NULL), '{}') AS platforms,
           min(published_at) AS first_at, max(published_at) AS last_at,
           mode() WITHIN GROUP (ORDER BY coalesce(linked.node, sel.author_pseudonym)) AS network_node
      FROM sel
      LEFT JOIN LATERAL (
           SELECT 'actor:' || a.name AS node FROM item_actors ia JOIN actors a ON a.id = ia.actor_id
            WHERE ia.item_id = sel.id AND ia.role = 'author' ORDER BY a.name LIMIT 1
      ) linked ON true
     GROUP BY author
  ) g
  LEFT JOIN actor_network_nodes n ON n.node = g.network_node
 ORDER BY g.author
"""

_HAS_EVENTS = "SELECT EXISTS (SELECT 1 FROM sel JOIN event_items ei ON ei.item_id = sel.id)"

# (context, author, term) rows: an event and the terms its items matched, or a (run, term) pair.
_EVENT_CONTEXTS = """
    SELECT DISTINCT 'event ' || ei.event_id AS ctx, sel.author, term, sel.published_at
      FROM sel JOIN event_items ei ON ei.item_id = sel.id
      LEFT JOIN LATERAL unnest(sel.terms) AS term ON true
"""
_TERM_CONTEXTS = """
    SELECT DISTINCT 'run ' || sel.collection_run_id || ' term ' || term AS ctx, sel.author, term, sel.published_at
      FROM sel CROSS JOIN LATERAL unnest(sel.terms) AS term
"""

_NETWORK_EDGES = """
, ctx_terms AS ({contexts}),
ctx_authors AS (
    SELECT ctx, author, min(published_at) AS first_at, max(published_at) AS last_at FROM ctx_terms GROUP BY ctx, author
),
crowded AS (SELECT ctx FROM ctx_authors GROUP BY ctx HAVING count(*) > %(max_authors)s),
pairs AS (
    SELECT a.author AS source, b.author AS target, count(*) AS weight,
           min(greatest(a.first_at, b.first_at)) AS first_at, max(greatest(a.last_at, b.last_at)) AS last_at
      FROM ctx_authors a JOIN ctx_authors b ON b.ctx = a.ctx AND a.author < b.author
     WHERE a.ctx NOT IN (SELECT ctx FROM crowded)
     GROUP BY 1, 2
),
pair_terms AS (
    SELECT a.author AS source, b.author AS target, array_agg(DISTINCT a.term ORDER BY a.term) AS shared_terms
      FROM ctx_terms a JOIN ctx_terms b ON b.ctx = a.ctx AND b.term = a.term AND a.author < b.author
     WHERE a.ctx NOT IN (SELECT ctx FROM crowded)
     GROUP BY 1, 2
)
SELECT e.source, e.target, e.weight, e.shared_terms, e.first_at, e.last_at, c.crowded_contexts
  FROM (SELECT count(*) AS crowded_contexts FROM crowded) c
  LEFT JOIN (SELECT p.source, p.target, p.weight, coalesce(t.shared_terms, '{{}}') AS shared_terms, p.first_at, p.last_at
               FROM pairs p LEFT JOIN pair_terms t USING (source, target)) e ON true
 ORDER BY e.source, e.target
"""


@dataclass
class NetworkStats:
    """How the network was built."""

    edge_basis: str  # 'events' or 'search_term_and_run'
    posts: int = 0
    crowded_contexts: int = 0


def build_network(
    cursor, filters: ExportFilters, secret: bytes | None = None, max_authors_per_context: int = MAX_AUTHORS_PER_CONTEXT
) -> tuple[nx.Graph, NetworkStats]:
    """The actor co-occurrence network of the selection.

    Nodes are authors (``posts``, ``sources``, ``languages``, the ``platforms`` they posted on, first/last post,
    and the ``metrics`` of their node in the archive-wide actor network where it has been computed);
    an edge joins two authors who posted in the same event, or, when no selected
    item belongs to an event yet, who matched the same search term in the same
    collection run. ``weight`` counts the shared events or (run, term) pairs;
    ``shared_terms`` are the search terms both authors' posts matched there.
    With a ``secret`` authors appear only as keyed pseudonyms.
    """
    import networkx as nx  # here, not with the module: every Dagster process loads the code location

    sel, params = driver_sql(selection(filters, *_NETWORK_COLUMNS, ordered=False).where(text(_HAS_AUTHOR)))
    base = f"WITH sel AS ({sel})\n"
    name = (lambda author: pseudonym(author, secret)) if secret else (lambda author: author)
    graph = nx.Graph()
    cursor.execute(base + _NETWORK_NODES, params)
    for author, posts, sources, languages, platforms, first_at, last_at, *metrics in cursor:
        graph.add_node(
            name(author),
            posts=posts,
            sources=sources,
            languages=languages,
            platforms=platforms,
            start=first_at,
            end=last_at,
            metrics=dict(zip((m for m, _ in NETWORK_METRICS), metrics)) if metrics[0] is not None else {},
        )
    cursor.execute(base + _HAS_EVENTS, params)
    by_events = cursor.fetchone()[0]
    stats = NetworkStats("events" if by_events else "search_term_and_run")
    stats.posts = sum(posts for _, posts in graph.nodes(data="posts"))
    contexts = _EVENT_CONTEXTS if by_events else _TERM_CONTEXTS
    cursor.execute(base + _NETWORK_EDGES.format(contexts=contexts), {**params, "max_authors": max_authors_per_context})
    for source, target, weight, shared_terms, first_at, last_at, crowded in cursor:
        stats.crowded_contexts = crowded
        if source is not None:
            graph.add_edge(
                name(source), name(target), weight=weight, shared_terms=shared_terms, start=first_at, end=last_at
            )
    return graph, stats


def _xml_attr(value: Any) -> str:
    return quoteattr(_XML_ILLEGAL.sub("", str(value)))


def _gexf_day(value: datetime) -> str:
    return value.astimezone(UTC).date().isoformat()


def _attvalues(values: dict[str, str]) -> str:
    inner = "".join(f"<attvalue for={_xml_attr(k)} value={_xml_attr(v)}/>" for k, v in values.items())
    return f"<attvalues>{inner}</attvalues>"


def write_gexf(graph: nx.Graph, handle: BinaryIO, dynamic: bool = False, description: str = "") -> None:
    """Write ``graph`` (from :func:`build_network`) as GEXF 1.3 that validates against the official schema.

    networkx's own 1.3 writer puts a ``name`` attribute on ``<graph>`` that the
    1.3 schema does not allow, so the document is written here. A node's actor-network
    metrics are declared node attributes, left out for a node the network has not reached. ``dynamic`` adds
    each node's and edge's span in days (first to last post, UTC) for Gephi's
    timeline.
    """
    out = io.TextIOWrapper(handle, encoding="utf-8", newline="\n", write_through=False)
    mode = ' mode="dynamic" timeformat="date"' if dynamic else ' mode="static"'
    out.write('<?xml version="1.0" encoding="UTF-8"?>\n')
    out.write('<gexf xmlns="http://gexf.net/1.3" version="1.3">\n')
    out.write(f'<meta lastmodifieddate="{datetime.now(UTC).date().isoformat()}"><creator>Observatory</creator>')
    out.write(f"<description>{escape(_XML_ILLEGAL.sub('', description))}</description></meta>\n")
    out.write(f'<graph defaultedgetype="undirected" idtype="string"{mode}>\n')
    out.write('<attributes class="node" mode="static">'
              '<attribute id="posts" title="posts" type="integer"/>'
              '<attribute id="sources" title="sources" type="string"/>'
              '<attribute id="languages" title="languages" type="string"/>'
              '<attribute id="platforms" title="platforms" type="string"/>'
              + "".join(f'<attribute id="{m}" title="{m}" type="{t}"/>' for m, t in NETWORK_METRICS)
              + "</attributes>\n")  # fmt: skip
    out.write('<attributes class="edge" mode="static">'
              '<attribute id="shared_terms" title="shared_terms" type="string"/></attributes>\n')  # fmt: skip
    out.write(f'<nodes count="{graph.number_of_nodes()}">\n')
    for node, data in graph.nodes(data=True):
        span = (
            f' start="{_gexf_day(data["start"])}" end="{_gexf_day(data["end"])}"'
            if dynamic and data.get("start")
            else ""
        )
        values = {
            "posts": data["posts"],
            "sources": "; ".join(data["sources"]),
            "languages": "; ".join(data["languages"]),
            "platforms": "; ".join(data["platforms"]),
            **data["metrics"],
        }
        out.write(f"<node id={_xml_attr(node)} label={_xml_attr(node)}{span}>{_attvalues(values)}</node>\n")
    out.write(f'</nodes>\n<edges count="{graph.number_of_edges()}">\n')
    for number, (source, target, data) in enumerate(graph.edges(data=True)):
        span = (
            f' start="{_gexf_day(data["start"])}" end="{_gexf_day(data["end"])}"'
            if dynamic and data.get("start")
            else ""
        )
        out.write(
            f'<edge id="e{number}" source={_xml_attr(source)} target={_xml_attr(target)} weight="{data["weight"]}"{span}>'
            f"{_attvalues({'shared_terms': '; '.join(data['shared_terms'])})}</edge>\n"
        )
    out.write("</edges>\n</graph>\n</gexf>\n")
    out.flush()
    out.detach()
