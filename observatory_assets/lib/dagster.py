"""The one small Dagster helper module: partitions shared by several domains and metadata helpers.

Domain modules stay plain Python; the ``assets.py`` modules and sensors use these
to speak Dagster the same way everywhere.
"""

from __future__ import annotations

import os
import socket
import warnings
from collections.abc import Callable
from datetime import timedelta
from importlib.util import find_spec
from typing import Any, NamedTuple

import dagster as dg
from sqlalchemy import Connection

from resources.settings import SettingsError, platform_settings

#: One partition per collection run: ``raw_items``, ``item_features`` and ``item_embeddings`` share it.
collection_run_partitions = dg.DynamicPartitionsDefinition(name="collection_runs")


def never_done(window: timedelta | None = None) -> dg.AutomationCondition:
    """Work whose parents exist but which was never done: the asset (or partition) is missing, every
    parent exists (or is requested on the same tick), neither it nor a parent is in progress, and its
    latest execution did not fail (a failure waits for a person). For a time-partitioned asset only the
    partitions within ``window`` of the latest one count (None: the latest); every collection run counts.

    A status, not an event: it holds on every tick until the work is done, so what was materialized while
    no daemon was evaluating (a partition loaded from the ``dagster`` CLI before the daemon's first start,
    or with the automation sensor stopped) is carried on at the next tick, where ``eager()`` only sees
    what happens after its first evaluation."""
    return (
        dg.AutomationCondition.in_latest_time_window(window)
        & dg.AutomationCondition.missing()
        & ~dg.AutomationCondition.any_deps_missing()
        & ~dg.AutomationCondition.any_deps_in_progress()
        & ~dg.AutomationCondition.in_progress()
        & ~dg.AutomationCondition.execution_failed()
    ).with_label("never done")


def eager_or_never_done() -> dg.AutomationCondition:
    """``eager()`` (a parent updated, or a partition newly missing) or :func:`never_done`: a collection
    run's features and embeddings follow its items however and whenever they were loaded."""
    return (dg.AutomationCondition.eager() | never_done()).with_label("eager, or never done")


def follows(*upstream: str) -> dg.AutomationCondition:
    """Declarative automation of an asset fed by ``upstream`` across partitionings (collection runs into
    one events table, the ledger into daily snapshots): it is requested once any ``upstream`` asset (or
    partition) has been materialized, by any run, since it was last requested or materialized, and when
    neither it nor an ``upstream`` asset is in progress, so a burst of upstream runs is followed by one
    (its other dependencies, which the upstream ones follow themselves, do not hold it back). What a daemon
    that was not running left behind is picked up too: the asset is requested when it was never
    materialized while an ``upstream`` partition was, and once on the condition's first evaluation when
    an ``upstream`` partition exists (whatever was materialized before then is not seen as an update; the
    assets it is used for are incremental, so a run with nothing new changes nothing).

    Unlike ``eager()``, an upstream that is only about to be requested does not count (it runs in
    another run, which could finish after this one), and a missing upstream partition (a collection run
    whose ingestion failed for good) does not hold it back. A failed execution of a never-done asset
    waits for a person."""
    selection = dg.AssetSelection.assets(*upstream)
    updated = (
        dg.AutomationCondition.any_deps_match(dg.AutomationCondition.newly_updated())
        .allow(selection)
        .since_last_handled()
    )
    upstream_exists = dg.AutomationCondition.any_deps_match(~dg.AutomationCondition.missing()).allow(selection)
    never_materialized = (
        dg.AutomationCondition.missing() & upstream_exists & ~dg.AutomationCondition.execution_failed()
    ).with_label("never done")
    first_look = (dg.AutomationCondition.initial_evaluation() & upstream_exists).with_label("first evaluation")
    return (
        (updated | never_materialized | first_look)
        & ~dg.AutomationCondition.any_deps_in_progress().allow(selection)
        & ~dg.AutomationCondition.in_progress()
    ).with_label(f"follows {', '.join(upstream)}")


def markdown_table(rows: list[dict]) -> str:
    """A Markdown table of ``rows`` (dicts with the same keys) for ``MetadataValue.md``."""
    if not rows:
        return "_no items_"
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        lines.append("| " + " | ".join(str(row[h]).replace("|", "\\|").replace("\n", " ") for h in header) + " |")
    return "\n".join(lines)


def utc_schedule(
    job: dg.JobDefinition | dg.UnresolvedAssetJobDefinition, cron: str, name: str, description: str | None = None
) -> dg.ScheduleDefinition:
    """A schedule of ``job`` on ``cron`` in UTC, running from the start, as every Observatory schedule does."""
    return dg.ScheduleDefinition(
        name=name,
        job=job,
        cron_schedule=cron,
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=description,
    )


def checked_collection_run(context: dg.AssetCheckExecutionContext, asset_key: dg.AssetKey) -> int | None:
    """The collection run (partition) a per-run check looks at: the one its run materialized, else (a check
    run on its own from the UI) the asset's latest materialized partition; None before the first one."""
    partition = context.run.tags.get("dagster/partition")
    if partition is None:
        event = context.instance.get_latest_materialization_event(asset_key)
        materialization = event.asset_materialization if event is not None else None
        partition = materialization.partition if materialization is not None else None
    return int(partition) if partition is not None else None


class RunCheckVerdict(NamedTuple):
    """What a per-run check found: whether it passed, its metadata, and what to do about a failure."""

    passed: bool
    metadata: dict[str, Any]
    hint: str | None = None


def collection_run_check(
    asset: dg.AssetsDefinition,
    name: str,
    description: str,
    evaluate: Callable[[Connection, int, Any], RunCheckVerdict],
    severity: dg.AssetCheckSeverity = dg.AssetCheckSeverity.ERROR,
    resource_keys: frozenset[str] = frozenset(),
) -> dg.AssetChecksDefinition:
    """An asset check of what one collection run (partition) of ``asset`` wrote. The check finds its run
    (:func:`checked_collection_run`; before the first materialization it passes, saying so) and calls
    ``evaluate(connection, run_id, resources)`` on a database connection; ``resource_keys`` are the resources
    it needs besides ``postgres``."""

    @dg.asset_check(
        asset=asset, name=name, description=description, required_resource_keys={"postgres", *resource_keys}
    )
    def check(context) -> dg.AssetCheckResult:  # unannotated: postponed, the annotation would reach Dagster as a string
        run_id = checked_collection_run(context, asset.key)
        if run_id is None:
            return dg.AssetCheckResult(
                passed=True, description=f"no collection run in {asset.key.to_user_string()} yet"
            )
        with context.resources.postgres.get_engine().connect() as conn:
            verdict = evaluate(conn, run_id, context.resources)
        return dg.AssetCheckResult(
            passed=verdict.passed,
            severity=severity,
            metadata={"collection_run": run_id, **verdict.metadata},
            description=None if verdict.passed else verdict.hint,
        )

    return check


def checked_since(context: dg.AssetCheckExecutionContext, asset_key: dg.AssetKey, started_key: str) -> str | None:
    """When the materialization a per-run check looks at started (its ``started_key`` metadata): the one
    of this run, else the latest; None before the first materialization."""
    event = context.instance.get_latest_materialization_event(asset_key)
    if event is None or event.asset_materialization is None:
        return None
    started = event.asset_materialization.metadata.get(started_key)
    return started.value if started is not None else None


#: ``dagster-celery/queue`` op tags of the heavy steps: a Celery worker serves any subset of the queues
#: ``ingest``, ``enrich`` and ``default`` (every other step: asset checks, events, exports).
INGEST_QUEUE = {"dagster-celery/queue": "ingest"}
ENRICH_QUEUE = {"dagster-celery/queue": "enrich"}

#: Celery settings the executor and the workers share (``celery.yaml`` repeats them for the workers).
#: A step is acknowledged when it ends, so a worker killed mid-step hands it back to the queue; a
#: message nobody acknowledged returns after the visibility timeout (longer than any step: six hours).
#: The broker is tried three times in one second, so a run whose broker is down fails at once.
CELERY_SETTINGS = {
    "task_default_queue": "default",
    "task_acks_late": True,
    "task_reject_on_worker_lost": True,
    "worker_prefetch_multiplier": 1,
    "broker_connection_retry_on_startup": True,
    "broker_transport_options": {
        "visibility_timeout": 21600,
        "max_retries": 3,
        "interval_start": 0,
        "interval_step": 0.2,
        "interval_max": 0.5,
    },
}


def heavy_job_executor(default: dg.ExecutorDefinition | None = None) -> dg.ExecutorDefinition | None:
    """The executor of a heavy job (ingest, enrich, events, exports): ``default`` (None: the code
    location's in-process default), or Dagster's Celery executor when ``OBSERVATORY_EXECUTOR=celery``.
    Broker and backend are read from the environment at run time, so no password enters run config."""
    try:
        settings = platform_settings()
    except SettingsError:  # a bad setting is said in one line when the resources are built, not at import
        return default
    if settings.executor != "celery" or find_spec("dagster_celery") is None:  # the resources say what is missing
        return default
    from dagster_celery import celery_executor

    # dagster-celery registers its step task again for every step it sends: said once per step on stderr
    warnings.filterwarnings("ignore", message="Task name 'execute_plan' is already registered")
    broker = {"env": "OBSERVATORY_CELERY_BROKER"}
    return celery_executor.configured(
        {
            "broker": broker,
            "backend": {"env": "OBSERVATORY_CELERY_BACKEND"} if settings.celery_backend_set else broker,
            "config_source": CELERY_SETTINGS,
        },
        name="celery",
    )


def worker_metadata() -> dict[str, str | int]:
    """Where the step ran (host and process), for its output metadata: on Celery, a worker's."""
    return {"worker_host": socket.gethostname(), "worker_pid": os.getpid()}
