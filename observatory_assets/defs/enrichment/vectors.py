"""What every embedder shares: the vector width, the document an item is embedded from, unit length."""

import numpy as np

#: The width of ``item_embeddings.embedding``.
DIMENSIONS = 384
#: Characters of an item's text used after its title: the lead carries the story.
LEAD_CHARS = 300

Document = tuple[str | None, str | None]  # (title, text)


def lead(text: str | None, chars: int = LEAD_CHARS) -> str:
    """The first ``chars`` characters of an item's text, cut at a word boundary."""
    if not text:
        return ""
    if len(text) <= chars:
        return text
    cut = text[:chars]
    space = cut.rfind(" ")
    return cut[:space] if space > chars // 2 else cut


def normalize(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (all-zero rows stay zero)."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return vectors / norms
