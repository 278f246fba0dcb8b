"""The evidence ledger: events matched against trend indicators, one row per (trend, event, indicator).

Matching is Postgres full-text search with each item's own language stemming
(``raw_items.text_search_config``), one set-based statement for all trends. An event is
evidence for an indicator only when its terms appear in at least ``MIN_MATCHED_SHARE`` (a
quarter) of the event's counted items: an event that mentions them in a few items of many is
about something else, or chains several stories, and its items would not tell the indicator's story
(on the UCI dev headlines this took evidence precision from 0.48 to 0.98 at recall 0.87 → 0.86;
see ``bench/trends.py --labelled``). A row's factors:

* credibility — the mean ``sources.credibility`` of the event's independent sources;
* corroboration — ``1 − 0.5^(n/2)`` for ``n`` independent sources (one source: 0.29,
  three: 0.65, ten: 0.97). Copies count once: linked duplicates are the kept item's
  copies, and an item is a copy when an earlier item of the event from another outlet has
  the same normalized title or an embedding within cosine 0.95 of it;
* novelty — 1 − the highest cosine similarity between the event and the trend's earlier
  evidence events (content, not elapsed time);
* severity — the indicator's;
* delta — ``direction · ln(LR) · credibility · corroboration · novelty · severity``, scaled so
  that one indicator's evidence of one UTC day sums to at most ``ln(LR) · severity``.

Evidence follows the events: a grown event updates its row, an event that no longer
matches (or no longer exists, or whose items were withdrawn by a takedown) retracts it —
``retracted_at`` is set, the row is never deleted. Withdrawn items never count.
All factors are rounded, so any batching or order of the same events gives the same ledger.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from operator import itemgetter

import numpy as np
from sqlalchemy import Engine, text

from observatory_assets.defs.trends.catalog import TrendDefinition, active_definitions
from observatory_assets.defs.trends.ledger import refresh_current_state, restate_snapshots
from observatory_assets.lib.takedowns import WITHDRAWN_ITEM_IDS, item_withdrawn_sql
from resources.postgres import register_vector_type

#: Embedding similarity from which two items of one event from different outlets are copies of one text.
COPY_SIMILARITY = 0.95
#: An event is evidence for an indicator only when at least this share of its counted items match its terms:
#: an event where they appear in a few items of many tells another story (or several, chained).
MIN_MATCHED_SHARE = 0.25

#: The oldest transaction still running now: every event change of an older transaction is visible (migration 0012).
_SNAPSHOT_XMIN = "SELECT pg_snapshot_xmin(pg_current_snapshot())::text"


@dataclass
class EvidenceResult:
    """What one evidence run did, and from when each trend's state changed (for the restatement)."""

    events_examined: int = 0
    added: int = 0
    updated: int = 0
    retracted: int = 0
    affected: dict[int, datetime] = field(default_factory=dict)
    restated: dict[date, int] = field(default_factory=dict)
    seconds: float = 0.0

    def touch(self, trend_id: int, at: datetime) -> None:
        if at is not None and (trend_id not in self.affected or at < self.affected[trend_id]):
            self.affected[trend_id] = at

    @property
    def affected_days(self) -> list[tuple[int, str]]:
        """(trend id, earliest UTC day whose state changed), the days the restatement rewrites."""
        return sorted((t, at.astimezone(UTC).date().isoformat()) for t, at in self.affected.items())


def _stage_definitions(conn, definitions: dict[int, TrendDefinition]) -> None:
    conn.execute(text("DROP TABLE IF EXISTS trend_indicators, trend_terms"))
    conn.execute(
        text(
            "CREATE TEMP TABLE trend_indicators (trend_id bigint, indicator text, sign integer, ln_lr float8, "
            "severity float8, likelihood_ratio float8, PRIMARY KEY (trend_id, indicator))"
        )
    )
    conn.execute(
        text(
            "CREATE TEMP TABLE trend_terms (trend_id bigint, indicator text, language text, term text, "
            "disqualifier boolean)"
        )
    )
    indicators, terms = [], []
    for trend_id, definition in definitions.items():
        for ind in definition.indicators:
            indicators.append((trend_id, ind.name, ind.sign, float(np.log(ind.likelihood_ratio)), ind.severity,
                               ind.likelihood_ratio))  # fmt: skip
            terms += [(trend_id, ind.name, lang, term, False) for lang, ts in ind.terms.items() for term in ts]
        terms += [(trend_id, "", lang, term, True) for lang, ts in definition.disqualifiers.items() for term in ts]
    for table, rows, types in (
        ("trend_indicators", indicators, ("bigint", "text", "integer", "float8", "float8", "float8")),
        ("trend_terms", terms, ("bigint", "text", "text", "text", "boolean")),
    ):
        if rows:
            columns = list(zip(*rows))
            placeholders = ", ".join(f"CAST(:c{i} AS {t}[])" for i, t in enumerate(types))
            conn.execute(
                text(f"INSERT INTO {table} SELECT * FROM unnest({placeholders})"),
                {f"c{i}": list(c) for i, c in enumerate(columns)},
            )


# Items of the candidate events that count at all (not withdrawn), with what matching needs.
_STAGE_ITEMS = f"""
CREATE TEMP TABLE trend_items AS
SELECT x.item_id, x.event_id, x.source_id, x.item_time, x.item_hash, r.language, r.text_search_config AS config,
       lower(btrim(regexp_replace(coalesce(r.title, ''), '[^[:alnum:]]+', ' ', 'g'))) AS norm_title
  FROM trend_events c
  JOIN event_items x ON x.event_id = c.event_id
  JOIN raw_items r ON r.id = x.item_id
 WHERE NOT {item_withdrawn_sql("x.item_id")};
CREATE INDEX ON trend_items (event_id);
ANALYZE trend_items
"""

# One query per term and stemming config present among the items (a term of only stop words matches nothing).
_STAGE_QUERIES = """
CREATE TEMP TABLE trend_queries AS
SELECT t.trend_id, t.indicator, t.language, c.config, t.disqualifier, t.term, q.query
  FROM trend_terms t
  JOIN (SELECT DISTINCT language, config FROM trend_items WHERE config IS NOT NULL) c ON c.language = t.language
 CROSS JOIN LATERAL phraseto_tsquery(c.config, t.term) AS q (query)
 WHERE numnode(q.query) > 0 AND t.trend_id = ANY(:trends);
ANALYZE trend_queries
"""

# The items' vectors are read from ``raw_items``, so the planner can probe its full-text index once per query
# when many events are staged, or test the few staged items when few are.
_STAGE_MATCHES = """
CREATE TEMP TABLE trend_matches AS
SELECT q.trend_id, q.indicator, i.event_id, i.item_id, q.term
  FROM trend_items i
  JOIN raw_items r ON r.id = i.item_id
  JOIN trend_queries q ON q.language = i.language AND q.config = i.config AND NOT q.disqualifier
 WHERE r.search_vector @@ q.query;
CREATE TEMP TABLE trend_disqualified AS
SELECT DISTINCT q.trend_id, i.item_id
  FROM trend_items i
  JOIN raw_items r ON r.id = i.item_id
  JOIN trend_queries q ON q.language = i.language AND q.config = i.config AND q.disqualifier
 WHERE r.search_vector @@ q.query;
CREATE INDEX ON trend_disqualified (item_id, trend_id);
ANALYZE trend_disqualified;
DELETE FROM trend_matches m USING trend_disqualified d WHERE d.trend_id = m.trend_id AND d.item_id = m.item_id;
CREATE INDEX ON trend_matches (event_id);
ANALYZE trend_matches
"""

# Per matched (trend, event): the counted items, copies collapsed, independent sources and their credibility.
_STAGE_DESIRED = f"""
CREATE TEMP TABLE trend_copies AS
SELECT i.item_id, EXISTS (
         SELECT 1 FROM trend_items o
          WHERE o.event_id = i.event_id AND o.source_id <> i.source_id
            AND (o.item_time, o.item_hash) < (i.item_time, i.item_hash)
            AND ((o.norm_title <> '' AND o.norm_title = i.norm_title)
                 OR 1 - ((SELECT embedding FROM item_embeddings WHERE item_id = o.item_id)
                         <=> (SELECT embedding FROM item_embeddings WHERE item_id = i.item_id)) >= {COPY_SIMILARITY})
       ) AS is_copy,
       (SELECT count(*) FROM item_duplicates d WHERE d.duplicate_of_item_id = i.item_id) AS linked_duplicates
  FROM trend_items i
 WHERE i.event_id IN (SELECT event_id FROM trend_matches);
CREATE UNIQUE INDEX ON trend_copies (item_id);
ANALYZE trend_copies;
CREATE TEMP TABLE trend_desired AS
WITH counted AS MATERIALIZED (
    SELECT m.trend_id, i.event_id, i.item_id, i.source_id, i.item_time, c.is_copy, c.linked_duplicates
      FROM (SELECT DISTINCT trend_id, event_id FROM trend_matches) m
      JOIN trend_items i ON i.event_id = m.event_id
      JOIN trend_copies c ON c.item_id = i.item_id
     WHERE NOT EXISTS (SELECT 1 FROM trend_disqualified d WHERE d.trend_id = m.trend_id AND d.item_id = i.item_id)
), per_event AS MATERIALIZED (
    SELECT trend_id, event_id, min(item_time) AS event_at, array_agg(item_id ORDER BY item_id) AS item_ids,
           count(*) + sum(linked_duplicates) AS texts, count(*) AS members
      FROM counted GROUP BY 1, 2
), originals AS MATERIALIZED (
    SELECT c.trend_id, c.event_id, greatest(count(DISTINCT c.source_id), 1) AS independent,
           avg(s.credibility) AS credibility
      FROM (SELECT DISTINCT trend_id, event_id, source_id FROM counted WHERE NOT is_copy) c
      JOIN sources s ON s.id = c.source_id
     GROUP BY 1, 2
)
SELECT m.trend_id, m.event_id, m.indicator, p.event_at, p.item_ids,
       round(coalesce(o.credibility, 0.5)::numeric, 6)::float8 AS credibility,
       coalesce(o.independent, 1) AS independent,
       greatest(p.texts - coalesce(o.independent, 1), 0) AS copies,
       round((1 - power(0.5, coalesce(o.independent, 1) / 2.0))::numeric, 9)::float8 AS corroboration,
       ti.severity, m.matched_terms
  FROM (SELECT trend_id, event_id, indicator, array_agg(DISTINCT term ORDER BY term) AS matched_terms,
               count(DISTINCT item_id) AS matched_items
          FROM trend_matches GROUP BY 1, 2, 3) m
  JOIN per_event p ON p.trend_id = m.trend_id AND p.event_id = m.event_id
  JOIN trend_indicators ti ON ti.trend_id = m.trend_id AND ti.indicator = m.indicator
  LEFT JOIN originals o ON o.trend_id = m.trend_id AND o.event_id = m.event_id
 WHERE m.matched_items >= {MIN_MATCHED_SHARE} * p.members
"""

_UPSERT = """
INSERT INTO trend_evidence AS e (trend_id, event_id, signal, event_at, item_ids, credibility, independent_sources,
                                 copies_collapsed, corroboration, novelty, severity, matched_terms, delta_log_odds)
SELECT trend_id, event_id, indicator, event_at, item_ids, credibility, independent, copies, corroboration, 1,
       severity, matched_terms, 0
  FROM trend_desired
ON CONFLICT (trend_id, event_id, signal) DO UPDATE
   SET event_at = EXCLUDED.event_at, item_ids = EXCLUDED.item_ids, credibility = EXCLUDED.credibility,
       independent_sources = EXCLUDED.independent_sources, copies_collapsed = EXCLUDED.copies_collapsed,
       corroboration = EXCLUDED.corroboration, severity = EXCLUDED.severity, matched_terms = EXCLUDED.matched_terms,
       retracted_at = NULL, retraction_reason = NULL, updated_at = now()
 WHERE (e.event_at, e.item_ids, e.credibility, e.independent_sources, e.copies_collapsed, e.corroboration,
        e.severity, e.matched_terms, e.retracted_at IS NULL)
       IS DISTINCT FROM (EXCLUDED.event_at, EXCLUDED.item_ids, EXCLUDED.credibility, EXCLUDED.independent_sources,
                         EXCLUDED.copies_collapsed, EXCLUDED.corroboration, EXCLUDED.severity,
                         EXCLUDED.matched_terms, true)
RETURNING e.trend_id, least(old.event_at, new.event_at) AS at, old.id IS NULL AS inserted
"""

_RETRACT_UNMATCHED = f"""
UPDATE trend_evidence e
   SET retracted_at = now(), updated_at = now(),
       retraction_reason = CASE WHEN EXISTS (SELECT 1 FROM ({WITHDRAWN_ITEM_IDS}) w WHERE w.item_id = ANY(e.item_ids))
                                THEN 'items withdrawn by a takedown' ELSE 'event no longer matches' END
 WHERE e.retracted_at IS NULL AND e.trend_id = ANY(:trends)
   AND e.event_id IN (SELECT event_id FROM trend_events)
   AND NOT EXISTS (SELECT 1 FROM trend_desired d
                    WHERE d.trend_id = e.trend_id AND d.event_id = e.event_id AND d.indicator = e.signal)
RETURNING e.trend_id, e.event_at
"""

_RETRACT_VANISHED = """
UPDATE trend_evidence e SET retracted_at = now(), updated_at = now(), retraction_reason = 'event no longer exists'
 WHERE e.retracted_at IS NULL AND NOT EXISTS (SELECT 1 FROM events v WHERE v.id = e.event_id)
RETURNING e.trend_id, e.event_at
"""


def _match_events(conn, trend_ids: list[int], result: EvidenceResult) -> None:
    """Bring the evidence of ``trend_ids`` for the events in ``trend_events`` in line with those events."""
    conn.execute(text("ANALYZE trend_events"))
    result.events_examined += conn.execute(text("SELECT count(*) FROM trend_events")).scalar_one()
    for script in (_STAGE_ITEMS, _STAGE_QUERIES, _STAGE_MATCHES, _STAGE_DESIRED):
        for statement in filter(str.strip, script.split(";\n")):
            conn.execute(text(statement), {"trends": trend_ids} if ":trends" in statement else {})
    for row in conn.execute(text(_UPSERT)):
        result.touch(row.trend_id, row.at)
        if row.inserted:
            result.added += 1
        else:
            result.updated += 1
    for row in conn.execute(text(_RETRACT_UNMATCHED), {"trends": trend_ids}):
        result.touch(row.trend_id, row.event_at)
        result.retracted += 1
    conn.execute(text("DROP TABLE trend_items, trend_queries, trend_matches, trend_disqualified, "
                      "trend_copies, trend_desired"))  # fmt: skip


def _stage_events(conn, select_sql: str, **params) -> None:
    conn.execute(text("DROP TABLE IF EXISTS trend_events"))
    conn.execute(text(f"CREATE TEMP TABLE trend_events AS {select_sql}"), params)


def _stage_novelty(conn, affected: dict[int, datetime]) -> None:
    """Fill the temporary table ``trend_novelty (id, novelty, closest)``: for every live row from each affected
    trend's first changed moment on, 1 − the highest cosine similarity of its event to the trend's earlier
    evidence events (ordered by event time, then id), and the closest such event."""
    raw = conn.connection.driver_connection
    register_vector_type(raw)
    with raw.cursor(binary=True) as cursor:
        # The ledger order is numbered without the vectors, so the server never sorts the wide rows.
        cursor.execute(
            """
            SELECT o.position, o.trend_id, o.id, o.event_id, o.target, v.centroid
              FROM (SELECT e.trend_id, e.id, e.event_id, e.event_at >= a.from_at AS target,
                           row_number() OVER (ORDER BY e.trend_id, e.event_at, e.event_id, e.signal) AS position
                      FROM trend_evidence e
                      JOIN unnest(%s::bigint[], %s::timestamptz[]) AS a (trend_id, from_at) ON a.trend_id = e.trend_id
                     WHERE e.retracted_at IS NULL) o
              JOIN events v ON v.id = o.event_id
            """,
            (list(affected), list(affected.values())),
        )
        rows = sorted(cursor.fetchall(), key=itemgetter(0))
    ids, novelties, closest = [], [], []
    start = 0
    while start < len(rows):
        end = start
        while end < len(rows) and rows[end][1] == rows[start][1]:
            end += 1
        _trend_novelty(rows[start:end], ids, novelties, closest)
        start = end
    conn.execute(text("DROP TABLE IF EXISTS trend_novelty"))
    conn.execute(
        text(
            """
            CREATE TEMP TABLE trend_novelty AS
            SELECT * FROM unnest(CAST(:ids AS bigint[]), CAST(:novelties AS float8[]), CAST(:closest AS bigint[]))
                          AS u (id, novelty, closest)
            """
        ),
        {"ids": ids, "novelties": novelties, "closest": closest},
    )
    conn.execute(text("CREATE UNIQUE INDEX ON trend_novelty (id)"))
    conn.execute(text("ANALYZE trend_novelty"))


def _trend_novelty(rows: list[tuple], ids: list, novelties: list, closest: list, chunk: int = 1024) -> None:
    """One trend's rows in ledger order: (position, trend, evidence id, event id, target, centroid)."""
    vectors = np.stack([r[5].to_numpy() for r in rows]).astype(np.float64)
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    event_ids = np.asarray([r[3] for r in rows])
    # Rows of one event are not "earlier" than each other: compare with the rows before the event's first.
    first = np.zeros(len(rows), dtype=np.int64)
    for position in range(1, len(rows)):
        first[position] = first[position - 1] if event_ids[position] == event_ids[position - 1] else position
    targets = np.asarray([p for p, r in enumerate(rows) if r[4]], dtype=np.int64)
    for begin in range(0, len(targets), chunk):
        batch = targets[begin : begin + chunk]
        similarities = vectors[batch] @ vectors.T
        similarities[np.arange(len(rows))[None, :] >= first[batch][:, None]] = -np.inf
        best = similarities.argmax(axis=1)
        top = similarities[np.arange(len(batch)), best]
        for position, b, value in zip(batch, best, top):
            ids.append(rows[position][2])
            if np.isinf(value):
                novelties.append(1.0)
                closest.append(None)
            else:
                novelties.append(round(1 - max(float(value), 0.0), 6))
                closest.append(int(event_ids[b]))


# Novelty (from ``trend_novelty``), the delta with the per-indicator, per-day cap, and the sentence a person
# reads, for the affected days: one write per row, and none for a row whose values stay the same.
_REFRESH_FACTORS = """
WITH scope AS (
    SELECT e.id, e.trend_id, e.signal, (e.event_at AT TIME ZONE 'UTC')::date AS day, e.event_id, e.item_ids,
           e.matched_terms, e.independent_sources, e.copies_collapsed, e.credibility, e.corroboration, e.severity,
           coalesce(n.novelty, e.novelty) AS novelty,
           CASE WHEN n.id IS NULL THEN e.closest_event_id ELSE n.closest END AS closest_event_id,
           ti.sign * ti.ln_lr * e.credibility * e.corroboration * coalesce(n.novelty, e.novelty) * e.severity AS raw,
           ti.ln_lr * e.severity AS cap, ti.sign, ti.likelihood_ratio, v.title
      FROM trend_evidence e
      LEFT JOIN trend_novelty n ON n.id = e.id
      LEFT JOIN events v ON v.id = e.event_id
      JOIN trend_indicators ti ON ti.trend_id = e.trend_id AND ti.indicator = e.signal
      JOIN unnest(CAST(:ids AS bigint[]), CAST(:froms AS timestamptz[])) AS a (trend_id, from_at)
        ON a.trend_id = e.trend_id
       AND e.event_at >= ((a.from_at AT TIME ZONE 'UTC')::date::timestamp AT TIME ZONE 'UTC')
     WHERE e.retracted_at IS NULL
), capped AS (
    SELECT s.*, round(s.raw::numeric, 9)::float8 AS raw_rounded,
           coalesce(round((s.raw * least(1, s.cap / nullif(sum(abs(s.raw)) OVER (PARTITION BY s.trend_id, s.signal,
                                                                                             s.day), 0)))::numeric,
                          9)::float8, 0) AS delta
      FROM scope s
), refreshed AS (
    SELECT c.id, c.novelty, c.closest_event_id, c.raw_rounded, c.delta,
           format(
               '%s (%s, LR %s) matched %s in %s item(s) of event %s "%s": %s independent source(s)%s → '
               || 'corroboration %s, credibility %s, novelty %s%s, severity %s → %s%s log-odds%s',
               c.signal, CASE WHEN c.sign > 0 THEN 'up' ELSE 'down' END, c.likelihood_ratio,
               array_to_string(ARRAY(SELECT quote_literal(t) FROM unnest(c.matched_terms) t), ', '),
               cardinality(c.item_ids), c.event_id, coalesce(c.title, ''), c.independent_sources,
               CASE WHEN c.copies_collapsed > 0 THEN format(' (%s copies collapsed)', c.copies_collapsed) ELSE '' END,
               to_char(c.corroboration, 'FM0.00'), to_char(c.credibility, 'FM0.00'), to_char(c.novelty, 'FM0.00'),
               CASE WHEN c.closest_event_id IS NOT NULL
                    THEN format(' (closest earlier evidence: event %s)', c.closest_event_id) ELSE '' END,
               to_char(c.severity, 'FM0.00'), CASE WHEN c.delta >= 0 THEN 'Δ +' ELSE 'Δ ' END,
               to_char(c.delta, 'FM990.000'),
               CASE WHEN abs(c.delta - c.raw_rounded) > 1e-9
                    THEN format(' (day cap; uncapped %s)', to_char(c.raw_rounded, 'FM990.000')) ELSE '' END
           ) AS reasoning
      FROM capped c
)
UPDATE trend_evidence e
   SET novelty = r.novelty, closest_event_id = r.closest_event_id, raw_delta = r.raw_rounded,
       delta_log_odds = r.delta, reasoning = r.reasoning, updated_at = now()
  FROM refreshed r
 WHERE e.id = r.id
   AND (e.novelty, e.closest_event_id, e.raw_delta, e.delta_log_odds, e.reasoning)
       IS DISTINCT FROM (r.novelty, r.closest_event_id, r.raw_rounded, r.delta, r.reasoning)
"""


def _refresh_factors(conn, affected: dict[int, datetime]) -> None:
    if not affected:
        return
    _stage_novelty(conn, affected)
    conn.execute(text(_REFRESH_FACTORS), {"ids": list(affected), "froms": list(affected.values())})
    conn.execute(text("DROP TABLE trend_novelty"))


def _lock(conn) -> None:
    conn.execute(text("SELECT pg_advisory_xact_lock(hashtext('observatory.trend_evidence'))"))


def update_evidence(engine: Engine, now: datetime | None = None) -> EvidenceResult:
    """Match every event changed by a transaction that had not finished when each active trend was last
    matched (``trends.matched_through``; all events for a new or changed trend),
    retract evidence of vanished events and withdrawn items, refresh the factors of the affected days and
    recompute every trend's state. One transaction: a killed run leaves the ledger as it was."""
    started = time.perf_counter()
    result = EvidenceResult()
    with engine.begin() as conn:
        _lock(conn)
        definitions = active_definitions(conn)
        # taken before this run reads any event (and before it writes, so it is not held back by itself)
        seen_through = conn.execute(text(_SNAPSHOT_XMIN)).scalar_one()
        _stage_definitions(conn, definitions)
        groups = conn.execute(
            text("SELECT matched_through::text, array_agg(id ORDER BY id) FROM trends WHERE active GROUP BY 1")
        ).all()
        for matched_through, trend_ids in groups:
            if matched_through is None:
                _stage_events(conn, "SELECT id AS event_id FROM events")
            else:
                _stage_events(
                    conn, "SELECT id AS event_id FROM events WHERE changed_by >= CAST(:since AS xid8)",
                    since=matched_through,
                )  # fmt: skip
            _match_events(conn, trend_ids, result)
        for row in conn.execute(text(_RETRACT_VANISHED)):
            result.touch(row.trend_id, row.event_at)
            result.retracted += 1
        _rematch_withdrawn(conn, list(definitions), result)
        _refresh_factors(conn, {t: at for t, at in result.affected.items() if t in definitions})
        conn.execute(
            text("UPDATE trends SET matched_through = CAST(:seen AS xid8) WHERE active"), {"seen": seen_through}
        )
        refresh_current_state(conn, now)
        result.restated = restate_snapshots(conn, result.affected)
    result.seconds = time.perf_counter() - started
    return result


def _rematch_withdrawn(conn, trend_ids: list[int], result: EvidenceResult) -> None:
    """Match again the events whose live evidence is built on a withdrawn item (their evidence is retracted,
    or keeps only what the remaining items support), and those whose takedown was cancelled (restored)."""
    _stage_events(
        conn,
        f"""SELECT DISTINCT e.event_id FROM trend_evidence e
             WHERE (e.retracted_at IS NULL AND e.item_ids && ARRAY(SELECT item_id FROM ({WITHDRAWN_ITEM_IDS}) w))
                OR (e.retraction_reason = 'items withdrawn by a takedown'
                    AND NOT e.item_ids <@ ARRAY(SELECT item_id FROM ({WITHDRAWN_ITEM_IDS}) w))""",
    )
    if trend_ids and conn.execute(text("SELECT count(*) FROM trend_events")).scalar_one():
        _match_events(conn, trend_ids, result)


def retract_withdrawn(engine: Engine, now: datetime | None = None) -> EvidenceResult:
    """Takedowns: evidence built on withdrawn items is retracted (never deleted) or recomputed without them,
    ``trends.current_log_odds`` is recomputed, the snapshots already written from each affected trend's
    earliest changed day on are restated (``.restated``: rows per day), and the affected (trend, earliest day)
    pairs are returned (``.affected_days``) so those ``trend_snapshots`` partitions can be re-materialized."""
    started = time.perf_counter()
    result = EvidenceResult()
    with engine.begin() as conn:
        _lock(conn)
        definitions = active_definitions(conn)
        _stage_definitions(conn, definitions)
        _rematch_withdrawn(conn, list(definitions), result)
        _refresh_factors(conn, result.affected)
        refresh_current_state(conn, now)
        result.restated = restate_snapshots(conn, result.affected)
    result.seconds = time.perf_counter() - started
    return result
