"""The Observatory code location: the one composition root.

Every folder under ``defs/`` is a domain whose ``definitions.py`` holds its ``Definitions`` (assets,
checks, jobs, schedules); Dagster's ``load_from_defs_folder`` finds them all (the defs module is named
by ``[tool.dg.project]`` in ``pyproject.toml``), so a new domain is a new folder. This module merges
them with every sensor (``sensors/``) and binds the resources for the environment (embedded parts, or
the servers the ``OBSERVATORY_*`` variables point at). Every job runs its steps in one process unless it
names its executor (the heavy jobs switch to Celery with ``OBSERVATORY_EXECUTOR=celery``): a step process
of its own costs seconds, which the short automated runs between a new item and its event cannot afford.
"""

from pathlib import Path

import dagster as dg

from observatory_assets.defs.enrichment.resources import EmbedderResource
from resources import observatory_resources
from sensors import SENSORS


def resources() -> dict[str, dg.ConfigurableResource]:
    """Infrastructure resources plus the configured embedder (``OBSERVATORY_EMBEDDER``)."""
    return {**observatory_resources(), "embedder": EmbedderResource.from_env()}


defs = dg.Definitions.merge(
    dg.load_from_defs_folder(path_within_project=Path(__file__).parent),
    dg.Definitions(sensors=SENSORS, resources=resources(), executor=dg.in_process_executor),
)
