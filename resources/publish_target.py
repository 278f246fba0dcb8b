"""Where digests are published: the static site in object storage (default) or a Ghost site."""

from __future__ import annotations

import dagster as dg
from pydantic import Field

DEFAULT_SITE_URL = "http://127.0.0.1:8765/"


class PublishTarget(dg.ConfigurableResource):
    """The publishing target's configuration. ``kind`` is where scheduled digests go; the Ghost URL and
    Admin API key (``id:secret``, bound through ``EnvVar`` so it never shows in the UI) also let
    takedowns reach posts published to Ghost earlier."""

    kind: str = Field(default="static", description="static (pages and feeds in object storage) or ghost.")
    ghost_url: str = Field(default="", description="Ghost site URL, e.g. https://news.example.org.")
    ghost_admin_key: str = Field(default="", description="Ghost Admin API key id:secret (secret).")
    site_url: str = Field(default=DEFAULT_SITE_URL, description="Public base URL of the static site, for feed links.")
    takedown_grace_hours: float = Field(default=72.0, description="Hours between takedown stage 1 and deletion.")

    @property
    def ghost_configured(self) -> bool:
        return bool(self.ghost_url and self.ghost_admin_key)
