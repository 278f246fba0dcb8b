"""Language detection and the text-search configuration that follows from it."""

from __future__ import annotations

from functools import lru_cache

from observatory_assets.defs.enrichment.vectors import lead

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


@lru_cache(maxsize=1)
def _identifier():
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def detect_language(title: str | None, body: str | None) -> tuple[str | None, float]:
    """The language of an item (ISO 639 code) and the detector's probability for it.

    ``(None, 0.0)`` when there are no letters to judge.
    """
    sample = " ".join(part for part in ((title or "").strip(), lead(body, DETECT_CHARS)) if part)
    if not any(ch.isalpha() for ch in sample):
        return None, 0.0
    language, confidence = _identifier().classify(sample)
    return language, round(float(confidence), 4)


def text_search_config(language: str | None, confidence: float, floor: float = DEFAULT_CONFIDENCE_FLOOR) -> str:
    """The text-search configuration for an item: its language's, or ``simple`` below the confidence floor."""
    if language is None or confidence < floor:
        return FALLBACK_CONFIG
    return TEXT_SEARCH_CONFIGS.get(language, FALLBACK_CONFIG)
