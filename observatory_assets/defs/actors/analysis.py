"""The analysis researchers ask for: daily volumes along every dimension, and the network of who acts together.

``volume_stats`` counts a day's items per query design by platform, arena, source, language, sentiment
label (one ``GROUPING SETS`` pass over the day's partition), by matched term and by linked actor. The
actor network joins actors and pseudonymous authors that appear in the same event (weighted by the
events they share) and authors to the actors they mention; networkx gives each node its degree, weighted
degree, betweenness and Louvain community.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING

import orjson
from sqlalchemy import Connection, text

if TYPE_CHECKING:
    import networkx as nx

DIMENSIONS = ("platform", "arena", "source", "language", "term", "sentiment", "actor")
#: An event with more authors than this links nobody (its pairs grow with the square of its size).
MAX_AUTHORS_PER_EVENT = 500
#: Betweenness is estimated from this many sampled sources on larger networks (exact below it).
BETWEENNESS_SAMPLES = 300

VOLUME_STATS = """
WITH day_items AS (
    SELECT r.id, CAST(r.published_at AT TIME ZONE 'UTC' AS date) AS day, cr.query_design_id AS design,
           coalesce(r.platform, 'unknown') AS platform, coalesce(r.arena, 'unknown') AS arena, s.name AS source,
           coalesce(r.language, 'unknown') AS language, coalesce(r.sentiment_label, 'unscored') AS sentiment,
           r.search_terms_matched AS terms
      FROM raw_items r
      JOIN collection_runs cr ON cr.id = r.collection_run_id
      JOIN sources s ON s.id = r.source_id
     WHERE r.published_at >= :first AND r.published_at < :after_last
)
INSERT INTO volume_stats (day, query_design_id, dimension, value, items)
SELECT day, design,
       CASE WHEN GROUPING(platform) = 0 THEN 'platform' WHEN GROUPING(arena) = 0 THEN 'arena'
            WHEN GROUPING(source) = 0 THEN 'source' WHEN GROUPING(language) = 0 THEN 'language'
            ELSE 'sentiment' END,
       coalesce(platform, arena, source, language, sentiment), count(*)
  FROM day_items
 GROUP BY GROUPING SETS ((day, design, platform), (day, design, arena), (day, design, source),
                         (day, design, language), (day, design, sentiment))
UNION ALL
SELECT day, design, 'term', term, count(*)
  FROM day_items CROSS JOIN LATERAL unnest(terms) AS term GROUP BY day, design, term
UNION ALL
SELECT d.day, d.design, 'actor', a.name, count(DISTINCT d.id)
  FROM day_items d JOIN item_actors ia ON ia.item_id = d.id JOIN actors a ON a.id = ia.actor_id
 GROUP BY d.day, d.design, a.name
"""


def compute_volume_stats(conn: Connection, first: date, last: date | None = None) -> int:
    """Recount the UTC days ``first`` to ``last`` (both included; one day when ``last`` is None) from scratch,
    in one pass over their items; returns the rows written. Idempotent."""
    last = last or first
    bounds = {
        "first": datetime.combine(first, time.min, UTC),
        "after_last": datetime.combine(last + timedelta(days=1), time.min, UTC),
    }
    conn.execute(text("DELETE FROM volume_stats WHERE day BETWEEN :first AND :last"), {"first": first, "last": last})
    return conn.execute(text(VOLUME_STATS), bounds).rowcount


@dataclass(frozen=True)
class VolumeRow:
    day: date
    design: str | None
    dimension: str
    value: str
    items: int


def volume_rows(
    conn: Connection, design: str | None, dimension: str, since: date | None = None, until: date | None = None
) -> list[VolumeRow]:
    """The daily counts of ``design`` (None: every design) along ``dimension``, oldest first."""
    if dimension not in DIMENSIONS:
        raise ValueError(f"unknown dimension {dimension!r}: one of {', '.join(DIMENSIONS)}")
    if (
        design is not None
        and conn.execute(text("SELECT 1 FROM query_designs WHERE name = :d"), {"d": design}).first() is None
    ):
        raise ValueError(f"no query design named {design!r} (see `observatory designs list`)")
    rows = conn.execute(
        text(
            """
            SELECT v.day, d.name AS design, v.dimension, v.value, v.items
              FROM volume_stats v LEFT JOIN query_designs d ON d.id = v.query_design_id
             WHERE v.dimension = :dimension
               AND (CAST(:design AS text) IS NULL OR d.name = :design)
               AND (CAST(:since AS date) IS NULL OR v.day >= :since)
               AND (CAST(:until AS date) IS NULL OR v.day <= :until)
             ORDER BY v.day, d.name, v.items DESC, v.value
            """
        ),
        {"dimension": dimension, "design": design, "since": since, "until": until},
    ).all()
    return [VolumeRow(*row) for row in rows]


def days_with_items(conn: Connection, since: date, until: date) -> list[date]:
    """The UTC days between ``since`` and ``until`` (both included) that have items."""
    return (
        conn.execute(
            text(
                """SELECT DISTINCT CAST(published_at AT TIME ZONE 'UTC' AS date) FROM raw_items
                    WHERE published_at >= :since AND published_at < CAST(:until AS date) + 1 ORDER BY 1"""
            ),
            {"since": since, "until": until},
        )
        .scalars()
        .all()
    )


# ---------------------------------------------------------------- the actor network

_AUTHOR_NODES = """
SELECT r.id AS item_id, coalesce('actor:' || a.name, r.author_pseudonym) AS node,
       coalesce(a.name, r.author_pseudonym) AS label, coalesce(a.kind, 'author') AS kind
  FROM raw_items r
  LEFT JOIN item_actors ia ON ia.item_id = r.id AND ia.role = 'author'
  LEFT JOIN actors a ON a.id = ia.actor_id
 WHERE r.author_pseudonym IS NOT NULL OR a.id IS NOT NULL
"""

_EVENT_EDGES = f"""
WITH authors AS ({_AUTHOR_NODES}),
per_event AS (
    SELECT ei.event_id, au.node FROM authors au JOIN event_items ei ON ei.item_id = au.item_id GROUP BY 1, 2
), small AS (
    SELECT event_id FROM per_event GROUP BY event_id HAVING count(*) BETWEEN 2 AND :cap
)
SELECT a.node AS source, b.node AS target, count(*) AS weight
  FROM per_event a JOIN per_event b ON a.event_id = b.event_id AND a.node < b.node
 WHERE a.event_id IN (SELECT event_id FROM small)
 GROUP BY 1, 2
"""

_MENTION_EDGES = f"""
WITH authors AS ({_AUTHOR_NODES})
SELECT au.node AS source, 'actor:' || a.name AS target, count(*) AS weight
  FROM authors au JOIN item_actors m ON m.item_id = au.item_id AND m.role = 'mention'
  JOIN actors a ON a.id = m.actor_id
 WHERE au.node <> 'actor:' || a.name
 GROUP BY 1, 2
"""

_NODES = f"""
WITH authors AS ({_AUTHOR_NODES})
SELECT node, min(label) AS label, min(kind) AS kind, count(*) AS items FROM authors GROUP BY node
UNION ALL
SELECT 'actor:' || a.name, a.name, a.kind, 0 FROM actors a
 WHERE EXISTS (SELECT 1 FROM item_actors m WHERE m.actor_id = a.id AND m.role = 'mention')
   AND NOT EXISTS (SELECT 1 FROM item_actors w WHERE w.actor_id = a.id AND w.role = 'author')
"""


def build_actor_network(conn: Connection, cap: int = MAX_AUTHORS_PER_EVENT) -> nx.Graph:
    """The co-occurrence network: shared events and mentions, weighted; nodes carry label, kind and items."""
    import networkx as nx

    graph = nx.Graph()
    for node, label, kind, items in conn.execute(text(_NODES)):
        graph.add_node(node, label=label, kind=kind, items=items)
    for query in (_EVENT_EDGES, _MENTION_EDGES):
        for source, target, weight in conn.execute(text(query), {"cap": cap}):
            previous = graph.get_edge_data(source, target, {}).get("weight", 0)
            graph.add_edge(source, target, weight=previous + weight)
    return graph


def network_metrics(graph: nx.Graph, seed: int = 7) -> dict[str, dict]:
    """Degree, weighted degree, betweenness (sampled on large networks) and Louvain community per node."""
    import networkx as nx

    samples = None if graph.number_of_nodes() <= BETWEENNESS_SAMPLES else BETWEENNESS_SAMPLES
    betweenness = nx.betweenness_centrality(graph, k=samples, seed=seed) if graph.number_of_nodes() else {}
    communities = nx.community.louvain_communities(graph, weight="weight", seed=seed) if graph.number_of_edges() else []
    community_of = {node: number for number, members in enumerate(sorted(communities, key=len, reverse=True))
                    for node in members}  # fmt: skip
    lone = len(communities)
    metrics = {}
    for node in graph.nodes:
        if node not in community_of:
            community_of[node], lone = lone, lone + 1
        metrics[node] = {
            "degree": graph.degree(node),
            "weighted_degree": float(graph.degree(node, weight="weight")),
            "betweenness": float(betweenness.get(node, 0.0)),
            "community": community_of[node],
        }
    return metrics


def store_network_metrics(conn: Connection, graph: nx.Graph, metrics: dict[str, dict]) -> int:
    """Replace ``actor_network_nodes`` with this network's nodes and metrics."""
    rows = [{"node": node, **graph.nodes[node], **metrics[node]} for node in graph.nodes]
    conn.execute(text("DELETE FROM actor_network_nodes"))
    return conn.execute(
        text(
            """
            INSERT INTO actor_network_nodes (node, label, kind, items, degree, weighted_degree, betweenness, community)
            SELECT * FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS r (
                node text, label text, kind text, items integer, degree integer, weighted_degree double precision,
                betweenness double precision, community integer)
            """
        ),
        {"rows": orjson.dumps(rows).decode()},
    ).rowcount


def top_actors_per_community(conn: Connection, per_community: int = 3, communities: int = 10) -> list[dict]:
    """The best-connected nodes of the largest communities, for the UI's table."""
    return [
        dict(row)
        for row in conn.execute(
            text(
                """
                WITH ranked AS (
                    SELECT *, row_number() OVER (PARTITION BY community ORDER BY weighted_degree DESC, node) AS place,
                           count(*) OVER (PARTITION BY community) AS size
                      FROM actor_network_nodes
                )
                SELECT community, size, label, kind, degree, round(weighted_degree::numeric, 1)::float8 AS weighted_degree,
                       round(betweenness::numeric, 4)::float8 AS betweenness
                  FROM ranked
                 WHERE place <= :per AND community < :communities
                 ORDER BY community, place
                """
            ),
            {"per": per_community, "communities": communities},
        ).mappings()
    ]


def analysis_overview(conn: Connection) -> dict:
    """What the analysis holds, for a summary: the days with counted volumes, the network's nodes and its
    communities, and its best-connected node."""
    return dict(
        conn.execute(
            text(
                """
                SELECT (SELECT count(DISTINCT day) FROM volume_stats) AS volume_days,
                       count(*) AS nodes, count(DISTINCT community) AS communities,
                       (SELECT label FROM actor_network_nodes ORDER BY weighted_degree DESC, node LIMIT 1) AS central
                  FROM actor_network_nodes
                """
            )
        )
        .mappings()
        .one()
    )
