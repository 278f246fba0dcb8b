"""The enrichment domain's resource: which embedder turns items into vectors (events cluster with it too)."""

import dagster as dg
from pydantic import Field
from sqlalchemy import Engine

from observatory_assets.defs.enrichment.embedders import DEFAULT_BACKEND, Embedder, make_embedder
from resources.settings import platform_settings


class EmbedderResource(dg.ConfigurableResource):
    """Which embedder turns items into vectors (``OBSERVATORY_EMBEDDER``: lexical, e5 or e5-lexical).

    Changing it (or taking a new lexical space) re-embeds items on their next
    ``item_embeddings`` run and rebuilds ``events`` in the new space; vectors of
    two spaces never mix.
    """

    backend: str = Field(
        default=DEFAULT_BACKEND,
        description="lexical (default, no model), e5 or e5-lexical (extra [quality]).",
    )

    @classmethod
    def from_env(cls) -> "EmbedderResource":
        return cls(backend=platform_settings().embedder)

    def get_embedder(self, engine: Engine) -> Embedder:
        """The embedder in its current space (one per run: resolve it once and use it throughout)."""
        return make_embedder(self.backend, engine)
