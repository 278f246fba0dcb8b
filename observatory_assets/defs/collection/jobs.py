"""Collection jobs: polling, the job that checks the catalog's due sources and files what changed as collection runs.

``polling_sensor`` (in ``sensors/``) starts ``poll_sources_job`` when a source is due, a run is stale
or a failed run may be retried. Each run first recovers stale runs and retries failed ones, then
runs one cycle. Its output metadata is what the UI shows of the sources: the cycle's counts, the
runs created, and every source's polling state.
"""

import dagster as dg
from pydantic import Field

from observatory_assets.defs.collection.catalog import source_states
from observatory_assets.defs.collection.polling import run_cycle
from observatory_assets.defs.collection.recovery import recover_stale_runs, retry_failed_runs
from observatory_assets.lib.dagster import collection_run_partitions, markdown_table
from resources import ObjectStoreResource, PostgresResource
from resources.outbound import OutboundClient
from resources.settings import platform_settings

COLLECTION = "collection"
SHOWN_STATE = ("name", "active", "last_status", "last_checked_at", "next_check_at", "error_count", "last_error")


class PollConfig(dg.Config):
    force: bool = Field(
        default=False,
        description="Treat every active source as due (overrides schedules and back-off, never a host's Retry-After).",
    )


@dg.op(description="Recover stale collection runs, retry failed ones, then check every due source once.")
def poll_sources(
    context: dg.OpExecutionContext, config: PollConfig, postgres: PostgresResource, object_store: ObjectStoreResource
) -> dict:
    engine, store = postgres.get_engine(), object_store.get_store()
    stale = recover_stale_runs(engine)
    retried = retry_failed_runs(engine, store)
    with OutboundClient() as client:
        report = run_cycle(
            engine,
            store,
            client,
            force=config.force,
            per_host=platform_settings().poll_per_host,
            poll_run_id=context.run_id,
        )
    created = [str(run_id) for run_id in [*report.runs.values(), *(r for r, error in retried.items() if error is None)]]
    if created:
        context.instance.add_dynamic_partitions(collection_run_partitions.name, created)
    with engine.connect() as conn:
        states = source_states(conn)
    context.add_output_metadata(
        {
            "due": report.due,
            "requests_sent": report.requests_sent,
            "not_modified": report.not_modified,
            "changed": report.changed,
            "errors": report.errors,
            "items_collected": report.items_collected,
            "runs": report.runs,
            "stale_runs_recovered": stale,
            "runs_retried": {str(k): v for k, v in retried.items()},
            "moved": report.moved,
            "deactivated": report.gone,
            "hosts_waiting": report.deferred_hosts,
            "credit_shortfalls": report.shortfalls,
            "sources": dg.MetadataValue.md(markdown_table([{k: s[k] for k in SHOWN_STATE} for s in states])),
        }
    )
    context.log.info(
        f"{report.due} due, {report.not_modified} not modified, {report.changed} changed, {report.errors} errors"
    )
    return report.as_dict()


@dg.job(
    description=(
        "One polling cycle: the catalog's due sources checked politely (conditional GET, per-host limits, "
        "Retry-After, back-off), changed payloads filed as at most one collection run per query design."
    ),
    tags={"observatory/domain": COLLECTION},
)
def poll_sources_job():
    poll_sources()
