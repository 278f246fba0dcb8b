"""``polling_sensor``: a polling run when a catalog source is due (or a failed collection run may be retried);
the collection runs of a polling run that died are recovered here, whether or not a polling run succeeds."""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg

from observatory_assets.defs.collection import charges
from observatory_assets.defs.collection.catalog import next_check_moment
from observatory_assets.defs.collection.jobs import poll_sources_job
from observatory_assets.defs.collection.polling import due_sources, plan_runs
from observatory_assets.defs.collection.recovery import (
    MAX_CYCLE_RUNTIME,
    STALE_AFTER,
    recover_stale_runs,
    retryable_runs,
)
from resources import PostgresResource

IN_PROGRESS = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def _next_check(conn) -> str:
    moment = next_check_moment(conn)
    return f"next check at {moment:%Y-%m-%d %H:%M:%S} UTC" if moment else "no active catalog source"


def polling_runs(context: dg.SensorEvaluationContext, now: datetime) -> tuple[str | None, list[str]]:
    """(the polling run in progress to wait for, every polling run in progress). A run in progress for
    longer than a cycle's lease is not waited for: run monitoring stops it, its collection runs are stale."""
    records = context.instance.get_run_records(
        filters=dg.RunsFilter(job_name=poll_sources_job.name, statuses=IN_PROGRESS), limit=100
    )
    young = [r.dagster_run.run_id for r in records if now - r.create_timestamp < STALE_AFTER]
    return (young[0] if young else None), [r.dagster_run.run_id for r in records]


def _funded(conn, sources: list) -> tuple[list, dict[str, str]]:
    """The due sources some design can pay for (or in no design), and the designs short of credits with
    why; a design that just became short is audited and its ``budget.exhausted`` webhook queued (once per
    exhaustion, by whoever sees it first: this sensor or a cycle)."""
    short, funded = {}, set()
    for plan in plan_runs(conn, sources) if sources else []:
        shortfall = charges.shortfall(conn, plan.design_id, plan.estimate)
        if shortfall is None:
            funded.update(source.id for source in plan.sources)
            continue
        short[plan.design] = f"design {plan.design} is short of {shortfall} credits (estimate {plan.estimate})"
        charges.note_shortfall(conn, "polling_sensor", plan.design_id, plan.design, plan.estimate, shortfall)
    return [source for source in sources if source.id in funded], short


#: Seconds between ticks: short beside the shortest poll interval (1 minute), so a source is fetched within
#: this of when it is due (a tick without due sources is one indexed query).
POLLING_SENSOR_INTERVAL_SECONDS = 10


@dg.sensor(
    job=poll_sources_job,
    minimum_interval_seconds=POLLING_SENSOR_INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Starts a polling run when a catalog source is due or a failed collection run may be retried; one "
        "polling run at a time, never waiting for one longer than a cycle's lease. Recovers the collection "
        "runs of a polling run that died (their sources are due again) itself, without a polling run. The "
        "skip reason says why no run was started."
    ),
)
def polling_sensor(context: dg.SensorEvaluationContext, postgres: PostgresResource) -> dg.SensorResult:
    now = datetime.now(UTC)  # before the instance is read: a cycle starting after it is not taken for dead
    waiting_for, in_progress = polling_runs(context, now)
    if waiting_for:
        return dg.SensorResult(skip_reason=f"polling run {waiting_for} is still in progress")
    engine = postgres.get_engine()
    recovered = recover_stale_runs(engine, polling_runs=(now, in_progress))
    with engine.begin() as conn:
        sources, waiting_hosts = due_sources(conn, now)
        retryable = retryable_runs(conn)
        sources, short = _funded(conn, sources)
        next_check = _next_check(conn)
    recovered_note = f"; {len(recovered)} stale collection runs recovered" if recovered else ""
    if not sources and not retryable:
        waiting = f"; hosts waiting (Retry-After): {', '.join(sorted(waiting_hosts))}" if waiting_hosts else ""
        reason = "; ".join(short.values()) if short else f"no source due ({next_check}){waiting}"
        return dg.SensorResult(skip_reason=reason + recovered_note)
    reasons = [f"{len(sources)} sources due"] if sources else []
    reasons += [f"{retryable} runs to retry"] if retryable else []
    tags = {
        "observatory/poll": ", ".join(reasons) + recovered_note,
        "dagster/max_runtime": str(int(MAX_CYCLE_RUNTIME.total_seconds())),
    }
    return dg.SensorResult(run_requests=[dg.RunRequest(run_key=f"poll-{now:%Y%m%dT%H%M}", tags=tags)])
