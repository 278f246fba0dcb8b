"""How well events match known stories: B-cubed precision, recall and F1 against story labels.

B-cubed scores every item: its precision is the share of its event that tells its story, its recall the
share of its story that its event holds; the scores are the means over the items (Bagga & Baldwin, 1998).
One event per story scores 1.0; one event holding everything has precision 1/stories; one event per item
has recall 1/story size. The demo scores its events against the sample's labels with it, and
``bench/cluster_quality.py`` against labelled news.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Mapping

from sqlalchemy import Engine, text


def bcubed(truth: Mapping[Hashable, Hashable], predicted: Mapping[Hashable, Hashable]) -> tuple[float, float]:
    """B-cubed precision and recall of ``predicted`` clusters against ``truth`` (both item → label), over
    the items of ``truth``."""
    true_sizes = Counter(truth.values())
    pred_sizes = Counter(predicted[i] for i in truth)
    both = Counter((truth[i], predicted[i]) for i in truth)
    precision = sum(both[(truth[i], predicted[i])] / pred_sizes[predicted[i]] for i in truth) / len(truth)
    recall = sum(both[(truth[i], predicted[i])] / true_sizes[truth[i]] for i in truth) / len(truth)
    return precision, recall


def f1(precision: float, recall: float) -> float:
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


_MEMBERSHIPS = """
SELECT s.name, r.external_id, x.event_id
  FROM event_items x
  JOIN raw_items r ON r.id = x.item_id
  JOIN sources s ON s.id = r.source_id
"""


def labelled_clustering_score(engine: Engine, labels: Mapping[tuple[str, str], str]) -> dict:
    """The stored events scored against story ``labels`` ((source name, external id) → story), over the
    clustered items that have a label (items without one, and labels of items not clustered, are left out)."""
    with engine.connect() as conn:
        predicted = {(source, external): event for source, external, event in conn.execute(text(_MEMBERSHIPS))}
    truth = {key: story for key, story in labels.items() if key in predicted}
    if not truth:
        return {"items": 0, "stories": 0, "events": 0, "bcubed_precision": 0.0, "bcubed_recall": 0.0, "bcubed_f1": 0.0}
    precision, recall = bcubed(truth, predicted)
    return {
        "items": len(truth),
        "stories": len(set(truth.values())),
        "events": len({predicted[key] for key in truth}),
        "bcubed_precision": round(precision, 4),
        "bcubed_recall": round(recall, 4),
        "bcubed_f1": round(f1(precision, recall), 4),
    }
