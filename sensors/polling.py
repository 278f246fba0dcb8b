"""``polling_sensor``: a polling run when a catalog source is due (or a collection run needs recovery)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import dagster as dg
from sqlalchemy import text

from observatory_assets.defs.collection import charges
from observatory_assets.defs.collection.jobs import poll_sources_job
from observatory_assets.defs.collection.polling import (
    MAX_FETCH_FAILURES,
    STALE_AFTER,
    due_sources,
    plan_runs,
)
from observatory_assets.lib.audit import record_audit
from observatory_assets.lib.statuses import CollectionRunStatus
from resources import PostgresResource

IN_PROGRESS = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]
RECOVERY_WORK = """
SELECT count(*) FILTER (WHERE status = :running AND started_at < clock_timestamp() - CAST(:stale AS interval)) AS stale,
       count(*) FILTER (WHERE status = :failed AND fetch_failures BETWEEN 1 AND :max - 1
                          AND started_at < clock_timestamp() - interval '1 minute' * power(2, fetch_failures - 1))
           AS retryable
  FROM collection_runs WHERE status IN (:running, :failed)
"""


def _next_check(conn) -> str:
    moment = conn.execute(
        text("SELECT min(next_check_at) FROM sources WHERE active AND url IS NOT NULL AND catalog_file IS NOT NULL")
    ).scalar()
    return f"next check at {moment:%Y-%m-%d %H:%M:%S} UTC" if moment else "no active catalog source"


@dg.sensor(
    job=poll_sources_job,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Starts a polling run when a catalog source is due, a collection run was left running by a stopped "
        "process, or a failed one may be retried; one polling run at a time. The skip reason says why not."
    ),
)
def polling_sensor(context: dg.SensorEvaluationContext, postgres: PostgresResource) -> dg.SensorResult:
    in_flight = context.instance.get_runs(
        filters=dg.RunsFilter(job_name=poll_sources_job.name, statuses=IN_PROGRESS), limit=1
    )
    if in_flight:
        return dg.SensorResult(skip_reason=f"polling run {in_flight[0].run_id} is still in progress")
    now = datetime.now(UTC)
    with postgres.get_engine().begin() as conn:
        sources, waiting_hosts = due_sources(conn, now)
        recovery = conn.execute(
            text(RECOVERY_WORK),
            {
                "stale": STALE_AFTER,
                "max": MAX_FETCH_FAILURES,
                "running": CollectionRunStatus.RUNNING,
                "failed": CollectionRunStatus.FAILED,
            },
        ).one()
        short, funded = {}, set()
        for plan in plan_runs(conn, sources) if sources else []:
            shortfall = charges.shortfall(conn, plan.design_id, plan.estimate)
            if shortfall is None:
                funded.update(source.id for source in plan.sources)
            else:
                short[plan.design] = f"design {plan.design} is short of {shortfall} credits (estimate {plan.estimate})"
        sources = [source for source in sources if source.id in funded]
        if short and not sources and short != dict(_audited(context.cursor)):
            for design, reason in short.items():
                record_audit(
                    conn,
                    "polling_sensor",
                    "credits.shortfall",
                    "query_design",
                    None,
                    design,
                    "skipped",
                    {"reason": reason},
                )
        next_check = _next_check(conn)
    if not sources and not recovery.stale and not recovery.retryable:
        waiting = f"; hosts waiting (Retry-After): {', '.join(sorted(waiting_hosts))}" if waiting_hosts else ""
        reason = "; ".join(short.values()) if short else f"no source due ({next_check}){waiting}"
        return dg.SensorResult(skip_reason=reason, cursor=json.dumps(sorted(short.items())))
    reasons = [f"{len(sources)} sources due"] if sources else []
    reasons += [f"{recovery.stale} stale runs"] if recovery.stale else []
    reasons += [f"{recovery.retryable} runs to retry"] if recovery.retryable else []
    minute = now.strftime("%Y%m%dT%H%M")
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=f"poll-{minute}", tags={"observatory/poll": ", ".join(reasons)})],
        cursor=json.dumps(sorted(short.items())),
    )


def _audited(cursor: str | None) -> list[tuple[str, str]]:
    """The shortfalls the sensor last recorded (its cursor), so a standing shortfall is audited once."""
    return [tuple(pair) for pair in json.loads(cursor)] if cursor else []
