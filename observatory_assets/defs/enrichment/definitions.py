"""The enrichment domain's definitions: item features and embeddings (the embedder is bound with the
code location's resources, from ``resources.py``)."""

import dagster as dg

from observatory_assets.defs.enrichment import assets, jobs

defs = dg.Definitions(
    assets=[assets.item_features, assets.item_embeddings],
    asset_checks=[assets.item_features_complete, assets.item_embeddings_one_space],
    jobs=[jobs.enrich_job],
)
