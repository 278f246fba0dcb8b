"""Reading the YAML files people write by hand (the source catalog, trend definitions)."""

from __future__ import annotations

from pathlib import Path

import yaml


def read_yaml_mapping(path: Path, error: type[Exception], expected: str, *, empty_is_mapping: bool = False) -> dict:
    """The mapping at the top of ``path``; anything else is ``error`` with one line naming the file: not
    YAML, or not a mapping (``expected`` says what it should hold). An empty file is an empty mapping
    only when ``empty_is_mapping``."""
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as problem:
        raise error(f"{path.name}: not valid YAML ({str(problem).splitlines()[0]})") from None
    if document is None and empty_is_mapping:
        return {}
    if not isinstance(document, dict):
        raise error(f"{path.name}: expected {expected}")
    return document
