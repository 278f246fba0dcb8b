"""Language detection and the text-search configuration that follows from it.

The detector is py3langid's naive Bayes model over byte n-grams. Its own ``classify`` walks the
n-gram automaton byte by byte in Python and scores each text on its own (about 1,500 texts a second);
:func:`detect_languages` runs the same model over many texts at once: one automaton step for all texts
per byte position, one sparse matrix product for the scores. Same features, same scores (to float
rounding), same answers.
"""

from __future__ import annotations

import io
import lzma
import os
import shutil
import tempfile
import threading
from collections.abc import Sequence
from functools import lru_cache
from importlib.metadata import version
from pathlib import Path

import numpy as np
from py3langid.langid import MODEL_DIR, MODEL_FILE, LanguageIdentifier
from scipy import sparse

from observatory_assets.defs.enrichment.vectors import Document, lead
from resources.settings import platform_settings

#: ISO 639-1 code → PostgreSQL text-search configuration (those shipped with PostgreSQL 18).
TEXT_SEARCH_CONFIGS = {
    "ar": "arabic", "hy": "armenian", "eu": "basque", "ca": "catalan", "da": "danish", "nl": "dutch",
    "en": "english", "fi": "finnish", "fr": "french", "de": "german", "el": "greek", "hi": "hindi",
    "hu": "hungarian", "id": "indonesian", "ga": "irish", "it": "italian", "lt": "lithuanian", "ne": "nepali",
    "no": "norwegian", "nn": "norwegian", "pt": "portuguese", "ro": "romanian", "ru": "russian",
    "sr": "serbian", "es": "spanish", "sv": "swedish", "ta": "tamil", "tr": "turkish", "yi": "yiddish",
}  # fmt: skip
FALLBACK_CONFIG = "simple"
DEFAULT_CONFIDENCE_FLOOR = 0.6
#: Characters of text (after the title) the language detector reads: enough to decide, cheap to score.
DETECT_CHARS = 200


_MODEL_ARRAYS = ("nextmove", "nextmove_row", "out_feat", "ptc", "pc", "classes")


def _model_arrays(cache_dir: Path | None = None) -> dict[str, np.ndarray]:
    """py3langid's model arrays, memory-mapped from an uncompressed copy in ``cache_dir`` (by default the
    platform's cache directory, ``OBSERVATORY_CACHE_DIR``).

    The shipped model is an xz-compressed npz: unpacking it costs over a second, in every process that
    detects a language (each Dagster step is one). The first process writes the arrays out once per
    py3langid version; the others map them, and the operating system shares their pages. Where the
    cache cannot be written, the model is read from the package as before.
    """
    model_file = MODEL_DIR / MODEL_FILE
    cache_dir = cache_dir or platform_settings().caches
    cached = cache_dir / f"langid-{version('py3langid')}-{model_file.stat().st_size}"
    if not cached.is_dir():
        try:
            _unpack_model(model_file, cached)
        except OSError:
            return _unpacked(model_file)
    try:
        return {name: np.load(cached / f"{name}.npy", mmap_mode="r") for name in _MODEL_ARRAYS}
    except (OSError, ValueError):  # a cache emptied or damaged by hand
        return _unpacked(model_file)


def _unpacked(model_file: Path) -> dict[str, np.ndarray]:
    with lzma.open(model_file) as compressed, np.load(io.BytesIO(compressed.read())) as arrays:
        return {name: arrays[name] for name in _MODEL_ARRAYS}


def _unpack_model(model_file: Path, cached: Path) -> None:
    """Write the model's arrays to ``cached`` (a directory of .npy files), whole or not at all."""
    cached.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=cached.parent, prefix=".langid-"))
    try:
        for name, array in _unpacked(model_file).items():
            np.save(scratch / f"{name}.npy", array)
        os.rename(scratch, cached)
    except OSError:
        if not cached.is_dir():  # else another process got there first
            raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


class _BatchModel:
    """py3langid's model as arrays: the byte n-gram automaton and the per-feature class log-probabilities."""

    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        self.nextmove = arrays["nextmove"]
        self.rowbase = arrays["nextmove_row"].astype(np.int64) << 8
        self.output = arrays["out_feat"].astype(np.int64)
        self.ptc = arrays["ptc"]
        self.pc = np.asarray(arrays["pc"], dtype=np.float32)
        self.classes = arrays["classes"].tolist()
        # a label with two columns (a script alias): the first column gets both probabilities
        first: dict[str, int] = {}
        self.aliases: list[tuple[int, int]] = []
        for column, label in enumerate(self.classes):
            if label in first:
                self.aliases.append((first[label], column))
            else:
                first[label] = column

    def classify(self, texts: Sequence[str]) -> list[tuple[str, float]]:
        """(language, probability) of each text, as ``LanguageIdentifier.classify`` with ``norm_probs``."""
        if not texts:
            return []
        encoded = [LanguageIdentifier._encode(text) for text in texts]
        lengths = np.fromiter((len(e) for e in encoded), np.int64, len(encoded))
        order = np.argsort(-lengths, kind="stable")  # longest first: the texts still walking are a prefix
        width = int(lengths.max())
        columns = np.zeros((width, len(encoded)), dtype=np.int64)
        for column, index in enumerate(order):
            columns[: lengths[index], column] = np.frombuffer(encoded[index], dtype=np.uint8)
        walking = np.searchsorted(-lengths[order], -np.arange(width), side="right")  # texts longer than t
        state = np.zeros(len(encoded), dtype=np.int64)
        hit_texts, hit_features = [], []
        for t in range(width):
            k = walking[t]
            state[:k] = self.nextmove[self.rowbase[state[:k]] + columns[t, :k]]
            features = self.output[state[:k]]
            found = np.flatnonzero(features >= 0)
            hit_texts.append(order[found])
            hit_features.append(features[found])
        texts_hit, features_hit = np.concatenate(hit_texts), np.concatenate(hit_features)
        present = np.zeros(len(self.ptc), dtype=bool)
        present[features_hit] = True
        used = np.flatnonzero(present)
        column_of = (np.cumsum(present) - 1)[features_hit]
        counts = sparse.csr_matrix(
            (np.ones(len(texts_hit), np.float32), (texts_hit, column_of)), shape=(len(encoded), len(used))
        )
        counts.sum_duplicates()
        counts.data = np.log1p(counts.data)
        scores = np.asarray(counts @ self.ptc[used].astype(np.float32), dtype=np.float32) + self.pc
        scores[np.diff(counts.indptr) == 0] = 0.0  # no feature at all: no evidence either way
        scores *= (1.0 / np.sqrt(np.maximum(lengths, 1))).astype(np.float32)[:, None]
        np.exp(scores - scores.max(axis=1, keepdims=True), out=scores)
        scores /= scores.sum(axis=1, keepdims=True)
        for kept, folded in self.aliases:
            scores[:, kept] += scores[:, folded]
            scores[:, folded] = 0.0
        best = scores.argmax(axis=1)
        return [(self.classes[b], float(scores[i, b])) for i, b in enumerate(best)]


_LOADING = threading.Lock()


def _batch_model() -> _BatchModel:
    """The process's one detector: the first caller loads it, callers on other threads meanwhile wait for it
    (``lru_cache`` alone would let each of them load its own)."""
    with _LOADING:
        return _loaded_batch_model()


@lru_cache(maxsize=1)
def _loaded_batch_model() -> _BatchModel:
    return _BatchModel(_model_arrays())


def detect_languages(documents: Sequence[Document]) -> list[tuple[str | None, float]]:
    """The language (ISO 639 code) of each (title, text) document and the detector's probability for it.

    ``(None, 0.0)`` for a document without letters to judge.
    """
    samples = [
        " ".join(part for part in ((title or "").strip(), lead(body, DETECT_CHARS)) if part)
        for title, body in documents
    ]
    judged = [i for i, sample in enumerate(samples) if any(ch.isalpha() for ch in sample)]
    detected: list[tuple[str | None, float]] = [(None, 0.0)] * len(samples)
    for i, (language, confidence) in zip(judged, _batch_model().classify([samples[i] for i in judged])):
        detected[i] = (language, round(confidence, 4))
    return detected


def detect_language(title: str | None, body: str | None) -> tuple[str | None, float]:
    """The language of one item and the detector's probability for it (see :func:`detect_languages`)."""
    return detect_languages([(title, body)])[0]


def text_search_config(language: str | None, confidence: float, floor: float = DEFAULT_CONFIDENCE_FLOOR) -> str:
    """The text-search configuration for an item: its language's, or ``simple`` below the confidence floor."""
    if language is None or confidence < floor:
        return FALLBACK_CONFIG
    return TEXT_SEARCH_CONFIGS.get(language, FALLBACK_CONFIG)
