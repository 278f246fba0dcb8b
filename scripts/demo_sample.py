"""Write the bundled demo sample (observatory_assets/sample_data/) and its story labels
(observatory_assets/sample_stories/labels.csv) from the stories in sample_stories/stories.yaml.
The generator is deterministic: running it again without editing the stories changes no byte.

    python scripts/demo_sample.py
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from observatory_assets.defs.ingestion.demo_data import LABELS_FILE, write_demo_dataset  # noqa: E402

if __name__ == "__main__":
    written = write_demo_dataset(ROOT / "observatory_assets" / "sample_data", labels=LABELS_FILE)
    print(f"wrote {len(written)} payloads and {LABELS_FILE.relative_to(ROOT)}")
