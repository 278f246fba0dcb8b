"""Collection runs that cannot get stuck: a run left ``running`` by a process that died is **stale**, and a
failed run is fetched again a bounded number of times with an exponential back-off.

Each rule is written once, here, as a SQL predicate: :func:`recover_stale_runs` and
:func:`retry_failed_runs` act on it, and :func:`recovery_work` counts it for the polling sensor, so the
sensor asks for a polling run exactly when this module would find work.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

from sqlalchemy import Connection, Engine, text

from observatory_assets.defs.collection import charges
from observatory_assets.defs.ingestion.collect import run_collection
from observatory_assets.lib.errors import failure_message
from observatory_assets.lib.statuses import CollectionRunStatus
from resources.object_store import ObjectStore

#: A run left ``running`` this long was left by a process that stopped.
STALE_AFTER = timedelta(minutes=15)
#: A run that failed this many times is not fetched again.
MAX_FETCH_FAILURES = 3

#: The stale-run rule (bound: ``:running``, ``:stale``).
_STALE = "status = :running AND started_at < clock_timestamp() - CAST(:stale AS interval)"
#: The retry rule (bound: ``:failed``, ``:max``): fewer than :data:`MAX_FETCH_FAILURES` failures, and a back-off
#: of 1 minute doubling with each failure since the last attempt started.
_RETRYABLE = (
    "status = :failed AND fetch_failures BETWEEN 1 AND :max - 1"
    " AND started_at < clock_timestamp() - interval '1 minute' * power(2, fetch_failures - 1)"
)


def _rule_parameters(stale_after: timedelta = STALE_AFTER) -> dict:
    return {
        "stale": stale_after,
        "max": MAX_FETCH_FAILURES,
        "running": CollectionRunStatus.RUNNING,
        "failed": CollectionRunStatus.FAILED,
    }


@dataclass(frozen=True)
class RecoveryWork:
    """How many runs are stale and how many failed runs may be fetched again now."""

    stale: int
    retryable: int


def recovery_work(conn: Connection) -> RecoveryWork:
    """The recovery a polling run would do now (what :func:`recover_stale_runs` and
    :func:`retry_failed_runs` would find), counted."""
    row = conn.execute(
        text(
            f"""
            SELECT count(*) FILTER (WHERE {_STALE}) AS stale, count(*) FILTER (WHERE {_RETRYABLE}) AS retryable
              FROM collection_runs WHERE status IN (:running, :failed)
            """
        ),
        _rule_parameters(),
    ).one()
    return RecoveryWork(row.stale, row.retryable)


def recover_stale_runs(engine: Engine, stale_after: timedelta = STALE_AFTER) -> list[int]:
    """Mark runs left ``running`` longer than ``stale_after`` (their process died) as failed; their ids."""
    with engine.begin() as conn:
        return list(
            conn.execute(
                text(
                    f"""
                    UPDATE collection_runs
                       SET status = :failed, fetch_failures = fetch_failures + 1,
                           error = 'stale: left running by a process that stopped; retried'
                     WHERE {_STALE}
                    RETURNING id
                    """
                ),
                _rule_parameters(stale_after),
            ).scalars()
        )


def retry_failed_runs(engine: Engine, store: ObjectStore, limit: int = 20) -> dict[int, str | None]:
    """Fetch again the failed runs that may still be retried (fewer than :data:`MAX_FETCH_FAILURES`
    failures, waiting a back-off since the last attempt); run id → None on success or the error."""
    with engine.connect() as conn:
        candidates = (
            conn.execute(
                text(f"SELECT id FROM collection_runs WHERE {_RETRYABLE} ORDER BY id LIMIT :limit"),
                {**_rule_parameters(), "limit": limit},
            )
            .scalars()
            .all()
        )
    results: dict[int, str | None] = {}
    for run_id in candidates:
        try:
            run_collection(engine, store, run_id)
            with engine.begin() as conn:
                _record_retry_cost_basis(conn, run_id)
            results[run_id] = None
        except Exception as error:  # recorded on the run by run_collection; the next cycle may retry it
            results[run_id] = failure_message(error)
    return results


def _record_retry_cost_basis(conn: Connection, run_id: int) -> None:
    """A retried design run sent one request per source again: its cost basis, as a cycle would record it
    (a run without a design, or collected by hand, has none)."""
    shares = conn.execute(
        text(
            """
            SELECT s.name,
                   s.cost_per_request / greatest((SELECT count(*) FROM query_design_sources q WHERE q.source_id = s.id), 1)
                       AS per_request,
                   s.cost_per_1k_items / greatest((SELECT count(*) FROM query_design_sources q WHERE q.source_id = s.id), 1)
                       AS per_1k
              FROM collection_runs r
             CROSS JOIN jsonb_array_elements(r.payloads) AS p (payload)
              JOIN sources s ON s.name = p.payload ->> 'name'
             WHERE r.id = :run AND r.query_design_id IS NOT NULL
            """
        ),
        {"run": run_id},
    ).all()
    if shares:
        request_cost = sum((Decimal(row.per_request) for row in shares), Decimal(0))
        charges.record_cost_basis(conn, run_id, request_cost, {row.name: Decimal(row.per_1k) for row in shares})
