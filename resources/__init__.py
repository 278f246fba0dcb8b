"""Dagster resources of Observatory and the one helper that configures them."""

from __future__ import annotations

import dagster as dg

from resources.object_store import ObjectStoreResource
from resources.postgres import PostgresResource
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

    return {"postgres": postgres, "object_store": object_store}


__all__ = ["ObjectStoreResource", "PostgresResource", "observatory_resources"]
