"""Links that expire are signed when read, never stored: a static digest's record keeps its object key,
and run metadata (kept forever) holds object keys, not pre-signed links to pages or to a database dump."""

from __future__ import annotations

import json
import uuid
from datetime import date

import dagster as dg
import httpx
from sqlalchemy import text

from observatory_assets.defs.operations.assets import postgres_backups
from observatory_assets.defs.publishing.assets import publish_records
from observatory_assets.defs.publishing.publisher import publish_day
from observatory_assets.defs.publishing.site import StaticTarget, page_key
from resources import ObjectStoreResource, PostgresResource, PublishTarget
from tests.support.digests import seed_day

DAY = date(2024, 5, 2)
SIGNED = "X-Amz-Signature"


def _s3(s3_server) -> ObjectStoreResource:
    """A bucket of this test's own on the session's SeaweedFS server."""
    return ObjectStoreResource(endpoint=s3_server.endpoint, bucket=f"links-{uuid.uuid4().hex[:12]}",
                               access_key=s3_server.access_key, secret_key=s3_server.secret_key)  # fmt: skip


def _metadata_text(result: dg.ExecuteInProcessResult, node: str) -> str:
    materialization = result.asset_materializations_for_node(node)[0]
    return json.dumps({name: str(value.value) for name, value in materialization.metadata.items()})


def test_a_static_record_keeps_its_key_and_a_link_is_signed_when_read(engine, s3_server):
    seed_day(engine, DAY, events=2)
    store = _s3(s3_server).get_store()
    target = StaticTarget(store)
    outcome = publish_day(engine, store, target, DAY, actor="test")
    with engine.connect() as conn:
        stored = conn.execute(text("SELECT to_jsonb(r)::text FROM publish_records r")).scalar_one()
        external_id, url = conn.execute(text("SELECT external_id, url FROM publish_records")).one()
    assert SIGNED not in stored and (external_id, url) == (page_key(DAY), None)
    link = target.link(external_id, url)
    assert SIGNED in link and outcome.url is None
    page = httpx.get(link, timeout=10)
    assert page.status_code == 200 and "<html" in page.text.lower()


def test_run_metadata_holds_object_keys_not_signed_links(engine, database_url, s3_server):
    seed_day(engine, DAY, events=1)
    resources = {"postgres": PostgresResource(url=database_url), "object_store": _s3(s3_server),
                 "publish_target": PublishTarget()}  # fmt: skip
    with dg.DagsterInstance.ephemeral() as instance:
        published = dg.materialize([publish_records], partition_key=DAY.isoformat(), instance=instance,
                                   resources=resources)  # fmt: skip
        backed_up = dg.materialize([postgres_backups], instance=instance, resources=resources)
    publish_md, backup_md = _metadata_text(published, "publish_records"), _metadata_text(backed_up, "postgres_backups")
    assert SIGNED not in publish_md and page_key(DAY) in publish_md
    assert SIGNED not in backup_md and json.loads(backup_md)["key"].startswith("postgres/")
