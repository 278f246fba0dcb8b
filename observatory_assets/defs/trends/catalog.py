"""Trend definitions are files: one YAML file per trend, validated, synced into ``trends`` by name.

The file format is public (people and scripts write it). A bad file is reported in
one line naming the file and the field, and the other trends still load. A file
that disappears deactivates its trend; its evidence and snapshots stay. The credibility
of sources lives in the sources catalog (``sources/``), not here.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy import Engine, text

from observatory_assets.lib.yaml_files import read_yaml_mapping
from resources.settings import platform_settings


class Direction(StrEnum):
    """Whether an indicator's signal makes the outcome more (``up``) or less (``down``) likely."""

    UP = "up"
    DOWN = "down"


class Indicator(BaseModel):
    """A kind of signal: terms per language, how strongly it speaks for (or against) the outcome."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_\-]+$")
    direction: Direction
    likelihood_ratio: float = Field(gt=1, description="P(signal | yes) / P(signal | no)")
    severity: float = Field(default=1.0, ge=0, le=1)
    terms: dict[str, list[str]] = Field(min_length=1, description="ISO language code → phrases")

    @field_validator("terms")
    @classmethod
    def _terms_not_empty(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for language, phrases in value.items():
            if not phrases or any(not p.strip() for p in phrases):
                raise ValueError(f"language {language!r} needs at least one non-empty term")
        return value

    @property
    def sign(self) -> int:
        return 1 if self.direction is Direction.UP else -1


class TrendDefinition(BaseModel):
    """One trend file: the question, its prior, how fast evidence fades and what counts as evidence."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9\-]*$", description="unique slug")
    title: str = Field(min_length=1)
    question: str = Field(min_length=1)
    horizon: date | None = None
    baseline_probability: float = Field(gt=0, lt=1)
    half_life_days: float = Field(gt=0)
    indicators: list[Indicator] = Field(min_length=1)
    disqualifiers: dict[str, list[str]] = Field(default_factory=dict)

    @field_validator("indicators")
    @classmethod
    def _unique_indicators(cls, value: list[Indicator]) -> list[Indicator]:
        names = [i.name for i in value]
        if len(names) != len(set(names)):
            raise ValueError("indicator names must be unique")
        return value

    @property
    def baseline_log_odds(self) -> float:
        return math.log(self.baseline_probability / (1 - self.baseline_probability))

    def sha256(self) -> str:
        """Fingerprint of the definition: a change re-matches every event against the trend."""
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()


class TrendFileError(ValueError):
    """A trend file that cannot be used, with the file and the field in its message."""


@dataclass
class LoadedTrends:
    """The valid definitions of a directory and one line per bad file."""

    definitions: dict[str, tuple[Path, TrendDefinition]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class SyncResult:
    """What a sync did: trends added, changed, unchanged, deactivated; bad files."""

    added: list[str]
    changed: list[str]
    unchanged: list[str]
    deactivated: list[str]
    errors: list[str]


def trends_dir(override: str | Path | None = None) -> Path:
    """The trend directory: ``override``, else ``OBSERVATORY_TRENDS_DIR``, else ``trends/`` in the project."""
    chosen = override or platform_settings().trends_dir
    return Path(chosen).resolve()


def _first_error(error: ValidationError) -> str:
    problem = error.errors()[0]
    where = ".".join(str(p) for p in problem["loc"]) or "(file)"
    return f"field {where}: {problem['msg']}"


def load_trend_file(path: Path) -> TrendDefinition:
    """One validated definition; :class:`TrendFileError` names the file and the field."""
    document = read_yaml_mapping(path, TrendFileError, "a mapping of fields")
    try:
        return TrendDefinition.model_validate(document)
    except ValidationError as error:
        raise TrendFileError(f"{path.name}: {_first_error(error)}") from None


def load_trends(directory: Path) -> LoadedTrends:
    """Every ``*.yaml``/``*.yml`` trend file of ``directory``."""
    loaded = LoadedTrends()
    if not directory.is_dir():
        raise FileNotFoundError(f"trend directory {directory} does not exist")
    for path in sorted(p for p in directory.iterdir() if p.suffix in (".yaml", ".yml")):
        try:
            definition = load_trend_file(path)
        except TrendFileError as error:
            loaded.errors.append(str(error))
            continue
        if definition.name in loaded.definitions:
            first = loaded.definitions[definition.name][0].name
            loaded.errors.append(f"{path.name}: field name: {definition.name!r} is already defined in {first}")
            continue
        loaded.definitions[definition.name] = (path, definition)
    return loaded


_UPSERT_TREND = """
INSERT INTO trends (name, title, question, horizon, baseline_probability, baseline_log_odds, current_log_odds,
                    half_life_hours, definition, definition_sha256, source_file, active)
VALUES (:name, :title, :question, :horizon, :p, :l0, :l0, :half_life_hours, CAST(:definition AS jsonb), :sha,
        :file, true)
ON CONFLICT (name) DO UPDATE
   SET title = EXCLUDED.title, question = EXCLUDED.question, horizon = EXCLUDED.horizon,
       baseline_probability = EXCLUDED.baseline_probability, baseline_log_odds = EXCLUDED.baseline_log_odds,
       half_life_hours = EXCLUDED.half_life_hours, definition = EXCLUDED.definition,
       definition_sha256 = EXCLUDED.definition_sha256, source_file = EXCLUDED.source_file, active = true,
       deactivated_at = NULL, updated_at = now(),
       matched_through = CASE WHEN trends.definition_sha256 IS DISTINCT FROM EXCLUDED.definition_sha256
                              THEN NULL ELSE trends.matched_through END
 WHERE (trends.definition_sha256, trends.source_file, trends.active)
       IS DISTINCT FROM (EXCLUDED.definition_sha256, EXCLUDED.source_file, true)
RETURNING (xmax = 0) AS inserted
"""


def set_source_credibility(engine_or_conn, ratings: dict[str, float]) -> int:
    """Set the credibility of sources by name (creating a source not seen yet, so the rating applies when it
    first publishes). Evidence of every trend is re-matched when a rating changes. Returns sources changed."""
    if not ratings:
        return 0
    for name, value in ratings.items():
        if not 0 <= value <= 1:
            raise ValueError(f"credibility of {name!r} must be from 0 to 1, not {value}")
    statement = text(
        """
        WITH rated AS (
            INSERT INTO sources (name, type, credibility)
            SELECT name, 'other', credibility FROM unnest(CAST(:names AS text[]), CAST(:values AS real[]))
                   AS r (name, credibility)
            ON CONFLICT (name) DO UPDATE SET credibility = EXCLUDED.credibility
             WHERE sources.credibility IS DISTINCT FROM EXCLUDED.credibility
            RETURNING id)
        SELECT count(*) FROM rated
        """
    )
    params = {"names": list(ratings), "values": list(ratings.values())}

    def run(conn) -> int:
        changed = conn.execute(statement, params).scalar_one()
        if changed:
            conn.execute(text("UPDATE trends SET matched_through = NULL"))
        return changed

    if isinstance(engine_or_conn, Engine):
        with engine_or_conn.begin() as conn:
            return run(conn)
    return run(engine_or_conn)


def sync_trends(engine: Engine, directory: str | Path | None = None) -> SyncResult:
    """Upsert every valid trend file by name and deactivate trends whose file is gone (history kept). A bad
    file is reported and skipped; its trend keeps its last good definition."""
    folder = trends_dir(directory)
    loaded = load_trends(folder)
    added, changed, unchanged = [], [], []
    bad_files = {line.split(":", 1)[0] for line in loaded.errors}
    with engine.begin() as conn:
        conn.execute(text("SELECT pg_advisory_xact_lock(hashtext('observatory.trends.sync'))"))
        for name, (path, definition) in loaded.definitions.items():
            row = conn.execute(
                text(_UPSERT_TREND),
                {
                    "name": name,
                    "title": definition.title,
                    "question": definition.question,
                    "horizon": definition.horizon,
                    "p": definition.baseline_probability,
                    "l0": definition.baseline_log_odds,
                    "half_life_hours": definition.half_life_days * 24,
                    "definition": json.dumps(definition.model_dump(mode="json")),
                    "sha": definition.sha256(),
                    "file": path.name,
                },
            ).one_or_none()
            (added if row and row.inserted else changed if row else unchanged).append(name)
        # A trend whose file is still there but invalid stays active with its last good definition.
        deactivated = list(
            conn.execute(
                text(
                    """
                    UPDATE trends SET active = false, deactivated_at = now(), updated_at = now()
                     WHERE active AND NOT (name = ANY(:names)) AND NOT (coalesce(source_file, '') = ANY(:bad))
                    RETURNING name
                    """
                ),
                {"names": list(loaded.definitions), "bad": sorted(bad_files)},
            ).scalars()
        )
    return SyncResult(added, changed, unchanged, deactivated, loaded.errors)


def active_definitions(conn) -> dict[int, TrendDefinition]:
    """The stored definitions of the active trends, by trend id."""
    rows = conn.execute(text("SELECT id, definition FROM trends WHERE active ORDER BY id")).all()
    return {row.id: TrendDefinition.model_validate(row.definition) for row in rows}


def trend_names(engine: Engine) -> dict[int, str]:
    """Every trend's name by its id (active or not)."""
    with engine.connect() as conn:
        return dict(conn.execute(text("SELECT id, name FROM trends")).all())
