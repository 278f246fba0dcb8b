"""Reading the YAML files people write by hand (the source catalog, actors, trend definitions)."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


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


def read_yaml_model(path: Path, model: type[M], error: type[Exception], expected: str) -> M:
    """``path`` validated as ``model`` (an empty file is an empty mapping); the first problem is ``error``
    with one line naming the file and the field, list entries by their ``name`` (see :func:`first_problem`)."""
    document = read_yaml_mapping(path, error, expected, empty_is_mapping=True)
    try:
        return model.model_validate(document)
    except ValidationError as problem:
        raise error(f"{path.name}: {first_problem(problem, document)}") from None


def first_problem(error: ValidationError, document: dict) -> str:
    """``field <where>: <what>`` of the first validation problem, where a list entry is named by its ``name``
    (``sources.dr-nyheder.url``), else by its position: ``#N`` at the top, its index below."""
    problem, parts, node = error.errors()[0], [], document
    for depth, part in enumerate(problem["loc"]):
        if isinstance(part, int) and isinstance(node, list) and part < len(node):
            entry = node[part]
            name = entry.get("name") if isinstance(entry, dict) else None
            parts.append(str(name) if name else (f"#{part + 1}" if depth == 1 else str(part)))
            node = entry
        else:
            parts.append(str(part))
            node = node.get(part) if isinstance(node, dict) else None
    return f"field {'.'.join(parts) or '(file)'}: {problem['msg'].removeprefix('Value error, ')}"
