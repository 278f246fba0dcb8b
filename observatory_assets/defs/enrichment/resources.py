"""The enrichment domain's resource: which embedder turns items into vectors (events cluster with it too)."""

import dagster as dg
from pydantic import Field
from sqlalchemy import Engine

from observatory_assets.defs.enrichment.embedders import DEFAULT_BACKEND, LEXICAL_BACKENDS, Embedder, make_embedder
from observatory_assets.defs.enrichment.spaces import settle_provisional_space
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

    def settle_space(self, engine: Engine) -> bool:
        """Whether this call replaced a fresh installation's provisional lexical space by a calibrated one
        (the archive has grown enough; see ``spaces``); the e5 embedder has no space to settle."""
        return self.backend in LEXICAL_BACKENDS and settle_provisional_space(engine) is not None

    def get_embedder(self, engine: Engine) -> Embedder:
        """The embedder in its current space (one per run: resolve it once and use it throughout)."""
        return make_embedder(self.backend, engine)
