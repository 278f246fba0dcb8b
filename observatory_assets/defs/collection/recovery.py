"""Collection runs that cannot get stuck: a run left ``running`` by a process that died is **stale**, and a
failed run is fetched again a bounded number of times with an exponential back-off.

A poll cycle's run (it holds a reservation: ``credits_estimated`` is set) is never fetched again as a
run: when it is found stale its hold is released and its sources, not checked since, are due at once,
so the next cycle fetches them the way it fetches any source (conditional GET, per-host limits, a host's
``Retry-After``, a reservation under the budget) and charges them once. A cycle leases its sources for
:data:`STALE_AFTER`, the time after which its run is stale, so no other cycle takes them meanwhile. A
run collected by hand (``observatory collect``) is retried by :func:`retry_failed_runs`.

Each rule is written once, here, as a SQL predicate: the functions below act on it, and
:func:`retryable_runs` counts it for the polling sensor.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Connection, Engine, text

from observatory_assets.defs.collection import charges
from observatory_assets.defs.ingestion.collect import run_collection
from observatory_assets.lib.errors import failure_message
from observatory_assets.lib.statuses import CollectionRunStatus
from resources.object_store import ObjectStore

#: A run left ``running`` this long was left by a process that stopped; a cycle leases its sources as long.
STALE_AFTER = timedelta(minutes=15)
#: A polling run is stopped (Dagster run monitoring, ``dagster/max_runtime``) well within its lease.
MAX_CYCLE_RUNTIME = timedelta(minutes=10)
#: A run that failed this many times is not fetched again.
MAX_FETCH_FAILURES = 3

#: The stale-run rule (bound: ``:running``, ``:stale``, ``:checked_at``, ``:live``): running for longer than
#: :data:`STALE_AFTER`, or a run of a polling run (Dagster's) that was not in progress at ``checked_at``
#: although the run started before.
_STALE = (
    "status = :running AND (started_at < clock_timestamp() - CAST(:stale AS interval)"
    " OR (poll_run_id IS NOT NULL AND NOT (poll_run_id = ANY(CAST(:live AS text[])))"
    " AND started_at < CAST(:checked_at AS timestamptz)))"
)
#: The retry rule (bound: ``:failed``, ``:max``): fewer than :data:`MAX_FETCH_FAILURES` failures, and a back-off
#: of 1 minute doubling with each failure since the last attempt started.
_RETRYABLE = (
    "status = :failed AND fetch_failures BETWEEN 1 AND :max - 1"
    " AND started_at < clock_timestamp() - interval '1 minute' * power(2, fetch_failures - 1)"
)


def _rule_parameters(
    stale_after: timedelta = STALE_AFTER, polling_runs: tuple[datetime, list[str]] | None = None
) -> dict:
    checked_at, live = polling_runs or (None, [])
    return {
        "stale": stale_after,
        "checked_at": checked_at,
        "live": live,
        "max": MAX_FETCH_FAILURES,
        "running": CollectionRunStatus.RUNNING,
        "failed": CollectionRunStatus.FAILED,
    }


def retryable_runs(conn: Connection) -> int:
    """How many failed runs :func:`retry_failed_runs` would fetch again now."""
    return conn.execute(
        text(f"SELECT count(*) FROM collection_runs WHERE {_RETRYABLE}"), _rule_parameters()
    ).scalar_one()


def recover_stale_runs(
    engine: Engine, stale_after: timedelta = STALE_AFTER, polling_runs: tuple[datetime, list[str]] | None = None
) -> list[int]:
    """Mark stale runs failed; their ids. Stale: left ``running`` longer than ``stale_after`` (their process
    died), or, given ``polling_runs`` (a moment and the polling runs in progress then, which the polling
    sensor reads from the Dagster instance), a cycle's run that a polling run not in progress created
    before that moment (a cycle outside Dagster is only ever stale by time). A cycle's run gives its
    sources back to the next cycle and releases its hold; any other run is left to :func:`retry_failed_runs`."""
    with engine.begin() as conn:
        recovered = conn.execute(
            text(
                f"""
                UPDATE collection_runs
                   SET status = :failed,
                       fetch_failures = CASE WHEN credits_estimated IS NULL THEN fetch_failures + 1 ELSE :max END,
                       error = CASE WHEN credits_estimated IS NULL
                                    THEN 'stale: left running by a process that stopped; retried'
                                    ELSE 'stale: left running by a polling process that stopped; its sources '
                                         'went back to the next cycle' END
                 WHERE {_STALE}
                RETURNING id, credits_estimated IS NOT NULL AS from_cycle
                """
            ),
            _rule_parameters(stale_after, polling_runs),
        ).all()
        _give_back(conn, [row.id for row in recovered if row.from_cycle])
    return [row.id for row in recovered]


def abandon_cycle_runs(engine: Engine, run_ids: list[int], reason: str) -> None:
    """A cycle that stops before recording its answers (``reason``: what stopped it) fails its runs still
    running, gives their sources back to the next cycle and releases their holds: nothing it sent is charged,
    the next cycle fetches and charges each source once."""
    with engine.begin() as conn:
        abandoned = conn.execute(
            text(
                """
                UPDATE collection_runs SET status = :failed, fetch_failures = :max, error = :error
                 WHERE id = ANY(CAST(:ids AS bigint[])) AND status = :running
                RETURNING id
                """
            ),
            {**_rule_parameters(), "ids": run_ids, "error": f"{reason}: its sources went back to the next cycle"},
        )
        _give_back(conn, list(abandoned.scalars()))


def _give_back(conn: Connection, cycle_runs: list[int]) -> None:
    """The sources of cycles' runs that died or stopped are the next cycle's; their holds are released."""
    if cycle_runs:
        _give_back_sources(conn, cycle_runs)
        for run_id in cycle_runs:
            charges.release_run(conn, run_id)


def _give_back_sources(conn: Connection, run_ids: list[int]) -> None:
    """The sources of dead cycles' runs that no check answered since the run started (still leased) are
    due now."""
    conn.execute(
        text(
            """
            UPDATE sources s SET next_check_at = clock_timestamp()
              FROM collection_runs r CROSS JOIN jsonb_array_elements(r.payloads) AS p (payload)
             WHERE r.id = ANY(CAST(:runs AS bigint[])) AND s.name = p.payload ->> 'name'
               AND s.next_check_at > clock_timestamp()
               AND (s.last_checked_at IS NULL OR s.last_checked_at < r.started_at)
            """
        ),
        {"runs": run_ids},
    )


def retry_failed_runs(engine: Engine, store: ObjectStore, limit: int = 20) -> dict[int, str | None]:
    """Fetch again the failed runs collected by hand that may still be retried (fewer than :data:`MAX_FETCH_FAILURES`
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
            results[run_id] = None
        except Exception as error:  # recorded on the run by run_collection; the next cycle may retry it
            results[run_id] = failure_message(error)
    return results
