"""Write observatory_assets/defs/enrichment/e5_mean.npy: the mean multilingual-e5-small vector of 1,000
generated demo items (Danish and English, the demo generator's fixed seed), which the e5 embedders
subtract before use (mean-centring). Needs the [quality] extra.

    python scripts/e5_mean.py
"""

import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from observatory_assets.defs.enrichment.embedders import _E5_MEAN, E5Embedder  # noqa: E402
from observatory_assets.defs.ingestion.demo_data import iter_items  # noqa: E402


def main() -> int:
    documents = [(d.get("title"), d.get("text")) for d in map(json.loads, iter_items(1000, seed=1, bad_rate=0))]
    mean = E5Embedder().raw(documents).mean(axis=0).astype(np.float32)
    np.save(_E5_MEAN, mean)
    print(json.dumps({"written": str(_E5_MEAN.relative_to(ROOT)), "documents": len(documents)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
