"""Dagster resources of Observatory and the one helper that configures them."""

from __future__ import annotations

from importlib.util import find_spec

import dagster as dg

from resources.object_store import ObjectStoreResource
from resources.postgres import PostgresResource
from resources.publish_target import PublishTarget
from resources.settings import PlatformSettings, platform_settings


def observatory_resources(settings: PlatformSettings | None = None) -> dict[str, dg.ConfigurableResource]:
    """The infrastructure resources for the current environment: embedded parts where no ``OBSERVATORY_*``
    variable points elsewhere, external servers (configured through ``EnvVar``, so secrets
    never reach the UI) where one does."""
    settings = settings or platform_settings()
    if settings.embedded_database:
        postgres = PostgresResource(embedded_home=str(settings.home))
    else:
        postgres = PostgresResource(url=dg.EnvVar("OBSERVATORY_DATABASE_URL"))
    if settings.embedded_object_store:
        object_store = ObjectStoreResource(local_root=str(settings.objects_root))
    else:
        object_store = ObjectStoreResource(
            endpoint=dg.EnvVar("OBSERVATORY_S3_ENDPOINT"),
            bucket=settings.s3_bucket,
            access_key=dg.EnvVar("OBSERVATORY_S3_ACCESS_KEY"),
            secret_key=dg.EnvVar("OBSERVATORY_S3_SECRET_KEY"),
            secure=settings.s3_secure,
            region=settings.s3_region,
        )

    if settings.executor == "celery" and not settings.celery_broker_set:
        raise ValueError(
            "OBSERVATORY_EXECUTOR=celery needs OBSERVATORY_CELERY_BROKER, e.g. redis://:password@host:6379/0"
        )
    if settings.executor == "celery" and find_spec("dagster_celery") is None:
        raise ValueError("OBSERVATORY_EXECUTOR=celery needs the [scale] extra: pip install '.[scale]'")
    if settings.publish_target == "ghost" and not settings.ghost_configured:
        raise ValueError("OBSERVATORY_PUBLISH_TARGET=ghost needs OBSERVATORY_GHOST_URL and OBSERVATORY_GHOST_ADMIN_KEY")
    ghost = (
        {"ghost_url": dg.EnvVar("OBSERVATORY_GHOST_URL"), "ghost_admin_key": dg.EnvVar("OBSERVATORY_GHOST_ADMIN_KEY")}
        if settings.ghost_configured
        else {}
    )
    publish_target = PublishTarget(
        kind=settings.publish_target, site_url=settings.site_url,
        takedown_grace_hours=settings.takedown_grace_hours, **ghost,
    )  # fmt: skip
    return {"postgres": postgres, "object_store": object_store, "publish_target": publish_target}


__all__ = ["ObjectStoreResource", "PostgresResource", "PublishTarget", "observatory_resources"]
