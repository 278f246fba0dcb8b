"""``inbox_sensor``: every object dropped under ``inbox/<source>/`` in object storage is taken once."""

from __future__ import annotations

import json

import dagster as dg

from observatory_assets.defs.ingestion.assets import inbox_job
from observatory_assets.defs.ingestion.inbox import origin_of, waiting_objects
from resources import ObjectStoreResource

MAX_DROPS_PER_TICK = 200


@dg.sensor(
    job=inbox_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Starts inbox_job for each object dropped under inbox/<source>/ in object storage: it becomes a "
        "collection run (the format from its extension; an unknown one a failed run with its reason) and "
        "moves to inbox/processed/<date>/."
    ),
)
def inbox_sensor(context: dg.SensorEvaluationContext, object_store: ObjectStoreResource) -> dg.SensorResult:
    # The cursor maps each key requested and still in the inbox to the ETag it had: the same drop is
    # requested once, a file dropped again under the same name (a new ETag) is a new drop.
    requested: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    waiting = list(waiting_objects(object_store.get_store()))
    new = [entry for entry in waiting if requested.get(entry.key) != entry.etag][:MAX_DROPS_PER_TICK]
    still_waiting = {entry.key: requested[entry.key] for entry in waiting if entry.key in requested}
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                run_key=origin_of(entry.key, entry.etag),
                run_config={"ops": {"take_inbox_drop": {"config": {"key": entry.key, "etag": entry.etag}}}},
                tags={"observatory/inbox_key": entry.key},
            )
            for entry in new
        ],
        cursor=json.dumps(still_waiting | {entry.key: entry.etag for entry in new}, sort_keys=True),
        skip_reason=None if new else f"no new objects in the inbox ({len(waiting)} already requested)",
    )
