"""Running the code location's jobs in-process, recorded in the Dagster instance as the daemon's runs are."""

from __future__ import annotations

import dagster as dg
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from observatory_assets.cli.context import Observatory
from observatory_assets.defs.ingestion.collect import runs_waiting_after
from observatory_assets.lib.dagster import collection_run_partitions
from observatory_assets.lib.errors import failure_message


def register_partitions(instance: dg.DagsterInstance, run_ids: list[int]) -> None:
    """Make collection runs visible as ``raw_items`` partitions in the Dagster instance."""
    instance.add_dynamic_partitions(collection_run_partitions.name, [str(r) for r in run_ids])


def ingest_runs(
    obs: Observatory, run_ids: list[int] | None = None, force: bool = False, job: str = "ingest_collection_run"
) -> list[dict]:
    """Materialize ``raw_items`` for the given runs (default: every completed run not yet ingested, those the
    sensor gave up on included: a person asked) through Dagster in-process, recorded in the Dagster instance
    as the sensor's runs are; ``job="ingest_to_events"`` carries each load on as the sensor's runs do."""
    engine = obs.engine  # the database at the code's schema before any run starts
    if run_ids is None:
        with engine.connect() as conn:
            run_ids = [run.id for run in runs_waiting_after(conn, include_abandoned=True)]
    register_partitions(obs.instance, run_ids)
    return [
        run_job(obs.instance, job, partition_key=str(run_id), ops_config={"raw_items": {"force": force}})
        for run_id in run_ids
    ]


def run_job(
    instance,
    name: str,
    partition_key: str | None = None,
    ops_config: dict | None = None,
    output_of: str | None = None,
    partition_range: tuple[str, str] | None = None,
) -> dict:
    """Run a job of the code location, recorded in ``instance`` as the daemon's runs are, with nothing on
    the console (the event log keeps every message and traceback): in-process, or, for a job on the
    Celery executor (``OBSERVATORY_EXECUTOR=celery``), orchestrated here with its steps on the workers.
    ``partition_range`` (first, last) runs a range of partitions in one run, as a single-run backfill does.
    Returns what happened, with the first failure's reason in one line, for people and scripts (and the
    output of op ``output_of``, when asked and the run succeeded)."""
    from observatory_assets.definitions import defs, resources

    run_config = {
        "ops": {op: {"config": config} for op, config in (ops_config or {}).items()},
        "loggers": {"console": {"config": {"log_level": "CRITICAL"}}},
    }
    range_tags = (
        {ASSET_PARTITION_RANGE_START_TAG: partition_range[0], ASSET_PARTITION_RANGE_END_TAG: partition_range[1]}
        if partition_range
        else {}
    )
    job = defs.resolve_job_def(name)
    if job.executor_def.name == "celery":
        tags = {**range_tags, **({"dagster/partition": partition_key} if partition_key else {})} or None
        reconstructable = dg.build_reconstructable_job(__name__, job_of_the_code_location.__name__, (name,))
        with dg.execute_job(reconstructable, instance, run_config=run_config, tags=tags) as result:
            return _outcome(name, partition_key, result, output_of)
    # the resources of this command's environment, not those bound when the code location was first imported
    result = job.execute_in_process(
        instance=instance, partition_key=partition_key, run_config=run_config, raise_on_error=False,
        resources=resources(), tags=range_tags or None,
    )  # fmt: skip
    return _outcome(name, partition_key or (partition_range and "…".join(partition_range)), result, output_of)


def job_of_the_code_location(name: str) -> dg.JobDefinition:
    """The job ``name`` of the code location, as a Celery worker rebuilds it for each step."""
    from observatory_assets.definitions import defs

    return defs.resolve_job_def(name)


def _outcome(
    name: str,
    partition_key: str | None,
    result: dg.ExecuteInProcessResult | dg.JobExecutionResult,
    output_of: str | None = None,
) -> dict:
    return {
        "job": name,
        "collection_run": int(partition_key) if partition_key and partition_key.isdigit() else None,
        "partition": partition_key,
        "dagster_run": result.run_id,
        "success": result.success,
        "error": None if result.success else _first_failure(result),
        **({"output": result.output_for_node(output_of) if result.success else None} if output_of else {}),
    }


def _first_failure(result: dg.ExecuteInProcessResult | dg.JobExecutionResult) -> str:
    """The root cause of the run's first step failure (else of the run's failure: a Celery broker out of
    reach), in one line that is safe to show."""
    failures = [event.step_failure_data.error for event in result.get_step_failure_events()]
    failures += [event.job_failure_data.error for event in result.all_events if event.is_run_failure]
    for error in failures:
        while error is not None and error.cause is not None:
            error = error.cause
        if error is not None:
            return failure_message(error.message.strip().splitlines()[0] if error.message.strip() else error.cls_name)
    return "the run failed before any step ran (see the run in the Dagster UI)"


def materialize_enrichment_and_events(instance: dg.DagsterInstance, run_ids: list[int]) -> list[dict]:
    """Enrich the given collection runs (partitions) and then cluster events through Dagster, recorded in
    ``instance`` like the sensors' runs (for the demo and the CLI)."""
    outcomes = [run_job(instance, "enrich_collection_run", partition_key=str(run_id)) for run_id in run_ids]
    return outcomes + [run_job(instance, "cluster_events")]
