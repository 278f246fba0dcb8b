"""Every setting of Observatory, in one validated model, and where each part lives.

A setting is an ``OBSERVATORY_<FIELD>`` environment variable (or a line of the
``.env`` file in the working directory, which Dagster's own processes load as
well); each has an embedded default, so a fresh checkout runs with none set.
:class:`PlatformSettings` is the only code that reads the environment: adding a
setting is adding one field with its description, which ``observatory config``
and ``docs/configuration.md`` then show. A bad value stops the program with one
line naming the variable and the value.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BeforeValidator, Field, SecretStr, ValidationError
from pydantic_settings import (
    BaseSettings,
    DotEnvSettingsSource,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)
from sqlalchemy.engine import make_url

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PREFIX = "OBSERVATORY_"
#: The optional settings file, relative to the working directory (the file Dagster loads too).
ENV_FILE = ".env"

Months = Annotated[int, Field(ge=0)]
LowerCase = BeforeValidator(lambda value: value.strip().lower() if isinstance(value, str) else value)
Resolved = AfterValidator(lambda path: path.resolve())


def _number_list(value: object) -> object:
    """A comma-separated list of numbers."""
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


def _path_list(value: object) -> object:
    """A ``:``-separated list of directories (as in ``PATH``), each resolved."""
    if isinstance(value, str):
        return tuple(Path(root).expanduser().resolve() for root in value.split(os.pathsep) if root)
    return value


class SettingsError(ValueError):
    """A setting has a value the platform cannot use; the message is one line naming the variable."""


class PlatformSettings(BaseSettings):
    """The resolved location of every part and every tunable; ``embedded`` parts run under ``home``.

    Each field's description is its documentation (shown by ``observatory config`` and written to
    ``docs/configuration.md``); secrets are :class:`~pydantic.SecretStr` and never shown.
    """

    model_config = SettingsConfigDict(
        env_prefix=PREFIX, env_file=ENV_FILE, env_ignore_empty=True, extra="ignore", frozen=True
    )

    home: Annotated[Path, Resolved] = Field(
        default=PROJECT_ROOT / ".observatory",
        description="Directory for embedded data (Postgres, objects, Dagster home).",
    )
    database_url: str | None = Field(default=None, description="Application Postgres URL; unset = embedded server.")
    dagster_database_url: str | None = Field(
        default=None, description="Dagster instance storage URL; unset = database 'dagster' beside the app database."
    )
    s3_endpoint: str | None = Field(
        default=None, description="S3 endpoint host:port; unset = a local directory object store under home."
    )
    s3_bucket: str = Field(default="observatory", description="Bucket for payloads, exports, archives and backups.")
    s3_access_key: SecretStr | None = Field(default=None, description="S3 access key.")
    s3_secret_key: SecretStr | None = Field(default=None, description="S3 secret key.")
    s3_secure: bool = Field(default=False, description="Use TLS for S3 (true/false).")
    s3_region: str = Field(default="us-east-1", description="S3 region.")
    embedder: Annotated[Literal["lexical", "e5", "e5-lexical"], LowerCase] = Field(
        default="lexical",
        description="Item embedder: lexical (no model download), e5 or e5-lexical (extra [quality]).",
    )
    sentiment: Annotated[Literal["fast", "e5"], LowerCase] = Field(
        default="fast",
        description="Item sentiment: fast (a head over the AFINN rules for Danish, an n-gram model for English; "
        "over 10,000 items/s) or e5 (e5 vectors with the lexicon's features; better, 15-20 items/s, extra [quality]).",
    )
    pg_bin: str = Field(
        default="",
        description="Directory of pg_dump/pg_restore matching an external server; unset = embedded, then PATH.",
    )
    pseudonym_key: SecretStr | None = Field(
        default=None,
        description="Secret (16+ characters) keying the author pseudonyms stored with every item; unset = a key "
        "generated under the embedded home (required with an external database).",
    )
    publish_target: Annotated[Literal["static", "ghost"], LowerCase] = Field(
        default="static", description="Where daily digests are published: static (site/ in object storage) or ghost."
    )
    ghost_url: str | None = Field(default=None, description="Ghost site URL for the ghost publish target.")
    ghost_admin_key: SecretStr | None = Field(default=None, description="Ghost Admin API key id:secret.")
    site_url: str = Field(
        default="http://127.0.0.1:8765/", description="Public base URL of the static site, used in feed links."
    )
    takedown_grace_hours: float = Field(
        default=72.0, ge=0, allow_inf_nan=False,
        description="Hours between takedown stage 1 (withdrawn) and stage 2 (deleted).",
    )  # fmt: skip
    audit_retention_days: int = Field(
        default=365, ge=0, description="Audit rows older than this are archived to Parquet and deleted; 0 keeps all."
    )
    retention_raw_items_months: Months = Field(
        default=0, description="Months of raw_items to keep; older months are archived, then dropped; 0 keeps all."
    )
    retention_trend_snapshots_months: Months = Field(
        default=0, description="Months of trend_snapshots to keep; 0 keeps all."
    )
    retention_collection_payloads_months: Months = Field(
        default=0, description="Months to keep collection-run payloads before they move to archive/; 0 keeps all."
    )
    trends_dir: Annotated[Path, Resolved] = Field(
        default=PROJECT_ROOT / "trends", description="Directory of the trend YAML files."
    )
    sources_dir: Annotated[Path, Resolved] = Field(
        default=PROJECT_ROOT / "sources", description="Directory of the source and query-design YAML files."
    )
    cache_dir: Annotated[Path, Resolved] | None = Field(
        default=None,
        description="Directory for what is rebuilt from installed packages (the language detector's unpacked model, "
        "66 MB); unset = $XDG_CACHE_HOME/observatory, else ~/.cache/observatory.",
    )
    allow_private_networks: bool = Field(
        default=False,
        description="Let outbound requests reach loopback and private addresses (tests, private deployments).",
    )
    contact_url: str | None = Field(
        default=None, description="Contact URL named in the outbound User-Agent; unset = OBSERVATORY_SITE_URL."
    )
    fetch_max_bytes: int = Field(
        default=15 * 1024**2, gt=0, description="Largest feed body fetched, in bytes after decoding (15 MiB)."
    )
    poll_per_host: int = Field(default=2, ge=1, description="Simultaneous requests per host while polling.")
    reddit_client_id: str | None = Field(
        default=None, description="Reddit app id for application-only OAuth (higher rate limit); unset = anonymous."
    )
    reddit_client_secret: SecretStr | None = Field(default=None, description="Reddit app secret for OAuth.")
    youtube_api_keys: SecretStr | None = Field(
        default=None,
        description="YouTube Data API keys, comma-separated: a pool, encrypted at rest in api_credentials, "
        "a key whose quota is spent resting until the quota day resets.",
    )
    bluesky_appview: str = Field(
        default="https://public.api.bsky.app",
        description="Bluesky AppView whose getAuthorFeed serves the actors a design follows (actor_lists).",
    )
    telegram_web: str = Field(
        default="https://t.me", description="Telegram's web preview host: a followed actor's channel is /s/<channel>."
    )
    youtube_api: str = Field(
        default="https://www.googleapis.com",
        description="YouTube Data API host: a followed actor's channel is read from its uploads playlist (playlistItems.list).",
    )
    reddit_api: str | None = Field(
        default=None,
        description="Reddit host of a followed actor's /user/<name>/submitted.json; unset = https://oauth.reddit.com "
        "with OBSERVATORY_REDDIT_CLIENT_ID/_SECRET set, else https://www.reddit.com.",
    )
    reddit_token_url: str = Field(
        default="https://www.reddit.com/api/v1/access_token", description="Reddit's OAuth token endpoint."
    )
    executor: Annotated[Literal["default", "celery"], LowerCase] = Field(
        default="default",
        description="Executor of the heavy jobs (ingest, enrich, events, exports): default (in-process or "
        "multiprocess, per job) or celery (extra [scale]; steps run on dagster-celery workers).",
    )
    celery_broker: SecretStr | None = Field(
        default=None,
        description="Celery broker URL for OBSERVATORY_EXECUTOR=celery, e.g. redis://:password@host:6379/0.",
    )
    celery_backend: SecretStr | None = Field(
        default=None, description="Celery result backend URL; unset = the broker URL."
    )
    secret_key: SecretStr | None = Field(
        default=None, description="Fernet key encrypting webhook secrets at rest (the embedded demo makes one)."
    )
    webhook_retry_schedule: Annotated[
        tuple[Annotated[float, Field(ge=0)], ...], NoDecode, BeforeValidator(_number_list)
    ] = Field(
        default=(5, 300, 1800, 7200, 18000, 36000, 36000),
        description="Webhook retry delays in seconds, comma-separated; default Svix's schedule.",
    )
    collect_roots: Annotated[tuple[Path, ...] | None, NoDecode, BeforeValidator(_path_list)] = Field(
        default=None,
        description="Directories local files may be collected from, separated by ':'; "
        "unset = one dedicated directory, <home>/collect; set but empty = none.",
    )

    @property
    def celery_broker_set(self) -> bool:
        return self.celery_broker is not None

    @property
    def celery_backend_set(self) -> bool:
        return self.celery_backend is not None

    @property
    def ghost_configured(self) -> bool:
        return bool(self.ghost_url and self.ghost_admin_key)

    @property
    def embedded_database(self) -> bool:
        return self.database_url is None

    @property
    def embedded_object_store(self) -> bool:
        return self.s3_endpoint is None

    @property
    def collect_root_dirs(self) -> tuple[Path, ...]:
        """The directories local files may be collected from (never the working directory or the home by
        default: a ``.env``, a key or ``~/.ssh`` must not become a payload)."""
        return (self.home / "collect",) if self.collect_roots is None else self.collect_roots

    @property
    def caches(self) -> Path:
        """The cache directory: ``cache_dir``, else the user's (the temporary directory for a user without a home)."""
        if self.cache_dir is not None:
            return self.cache_dir
        if configured := os.environ.get("XDG_CACHE_HOME"):
            return Path(configured) / "observatory"
        try:
            return Path.home() / ".cache" / "observatory"
        except RuntimeError:
            return Path(tempfile.gettempdir()) / "observatory"

    @property
    def pgdata(self) -> Path:
        return self.home / "pgdata"

    @property
    def objects_root(self) -> Path:
        return self.home / "objects"

    @property
    def dagster_home(self) -> Path:
        return self.home / "dagster_home"

    @classmethod
    def settings_customise_sources(
        cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, _EmptyCollectRoots(settings_cls), env_settings, dotenv_settings, file_secret_settings)


class _EmptyCollectRoots(PydanticBaseSettingsSource):
    """``OBSERVATORY_COLLECT_ROOTS`` set to nothing means no directory at all (other empty variables are
    ignored, ``env_ignore_empty``, and would fall back to the default)."""

    def get_field_value(self, field, field_name):  # the whole source is one value: see __call__
        return None, field_name, False

    def __call__(self) -> dict[str, object]:
        return _empty_collect_roots(os.environ)


def _empty_collect_roots(environ) -> dict[str, object]:
    return {"collect_roots": ()} if environ.get(variable("collect_roots")) == "" else {}


class _FromMapping(PlatformSettings):
    """The settings from an explicit mapping of variables only (no process environment, no file)."""

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, **_other) -> tuple[PydanticBaseSettingsSource]:
        return (init_settings,)


def variable(field: str) -> str:
    """The environment variable of a settings field."""
    return PREFIX + field.upper()


#: Every variable the platform reads, with its meaning (generated from the model).
ENVIRONMENT = {variable(name): field.description for name, field in PlatformSettings.model_fields.items()}


def _one_line(error: ValidationError) -> SettingsError:
    problem = error.errors()[0]
    name = variable(str(problem["loc"][0])) if problem["loc"] else "settings"
    message = problem["msg"][:1].lower() + problem["msg"][1:]
    shown = "the value given" if is_secret(name) else repr(problem["input"])
    return SettingsError(f"{name}: {message}, not {shown}")


def platform_settings(environ: dict[str, str] | None = None) -> PlatformSettings:
    """The validated settings: from the process environment and ``.env``, or only from ``environ`` when
    given; :class:`SettingsError` (one line) on a bad value."""
    try:
        if environ is None:
            return PlatformSettings()
        fields = {name: value for name in PlatformSettings.model_fields if (value := environ.get(variable(name)))}
        return _FromMapping(**fields, **_empty_collect_roots(environ))
    except ValidationError as error:
        raise _one_line(error) from None


#: Variables this process took from ``.env`` (see :func:`adopt_env_file`).
_ADOPTED_FROM_FILE: set[str] = set()


def adopt_env_file() -> None:
    """Put the ``.env`` file's variables that the environment does not set into this process, as the
    ``dagster`` CLI does for its code locations, so that resources reading ``EnvVar`` see them too."""
    for name, value in DotEnvSettingsSource(PlatformSettings).env_vars.items():
        name = name.upper()
        if value and name.startswith(PREFIX) and name not in os.environ:
            os.environ[name] = value
            _ADOPTED_FROM_FILE.add(name)


def setting_sources() -> dict[str, str]:
    """Where each setting's value comes from: ``env`` (the process environment, which wins), ``file``
    (``.env``) or ``default``."""
    from_env, from_file = EnvSettingsSource(PlatformSettings)(), DotEnvSettingsSource(PlatformSettings)()
    sources = {}
    for name in PlatformSettings.model_fields:
        in_env = name in from_env and variable(name) not in _ADOPTED_FROM_FILE
        sources[variable(name)] = "env" if in_env else "file" if name in from_file else "default"
    return sources


def described_settings(settings: PlatformSettings | None = None) -> list[tuple[str, str, str, str]]:
    """(variable, value as shown, source, documentation) for every setting, secrets masked."""
    settings = settings or platform_settings()
    sources = setting_sources()
    return [
        (name, _shown(name, getattr(settings, field)), sources[name], ENVIRONMENT[name])
        for field, name in ((field, variable(field)) for field in PlatformSettings.model_fields)
    ]


def configuration_markdown() -> str:
    """``docs/configuration.md``: every setting with its default and meaning, generated from the model
    (``make docs`` rewrites it; a test fails when it is stale)."""
    lines = [
        "# Configuration",
        "",
        "<!-- Generated from resources/settings.py by `make docs`; do not edit by hand. -->",
        "",
        "Every setting is an environment variable, or a `NAME=value` line in a `.env` file in the working",
        "directory (the process environment wins over the file; Dagster's own processes load the same file).",
        "Unset, each has the default below, so a fresh checkout runs with none. A bad value stops the",
        "program with one line naming the variable. `observatory config` shows the value in effect, where it",
        "came from (`env`, `file` or `default`) and this documentation; secrets only as `(set)`.",
        "",
        "| variable | default | meaning |",
        "|---|---|---|",
    ]
    for name, field in PlatformSettings.model_fields.items():
        default = field.default
        if isinstance(default, Path):
            default = f"./{default.relative_to(PROJECT_ROOT)}" if default.is_relative_to(PROJECT_ROOT) else default
        if isinstance(default, bool):
            default = str(default).lower()
        shown = "(secret)" if is_secret(variable(name)) else "(unset)" if default in (None, "") else f"`{default}`"
        lines.append(f"| `{variable(name)}` | {shown} | {field.description} |")
    return "\n".join(lines) + "\n"


def child_environment(**overrides: str | None) -> dict[str, str]:
    """The environment for a child process (pg_dump, pg_restore): this one's, with ``overrides`` set
    (``None`` removes a variable)."""
    env = dict(os.environ)
    for name, value in overrides.items():
        env.pop(name, None)
        if value is not None:
            env[name] = value
    return env


def export_for_children(name: str, value: str) -> None:
    """Set a variable in this process so that Dagster and child processes inherit it."""
    os.environ[name] = value


def is_secret(name: str) -> bool:
    """Variables whose value is never shown (keys and passwords); URLs are shown with the password masked."""
    field = PlatformSettings.model_fields.get(name.removeprefix(PREFIX).lower())
    return (field is not None and field.annotation == SecretStr | None) or name.endswith(
        ("_KEY", "_PASSWORD", "_SECRET", "_TOKEN")
    )


def displayed_value(name: str, env: dict[str, str] | None = None) -> str:
    """What ``observatory config`` shows for a variable: ``(unset)``, ``(set)`` for a secret, a URL with
    its password masked, else the value (from ``env`` when given, else the resolved settings)."""
    value = env.get(name) if env is not None else getattr(platform_settings(), name.removeprefix(PREFIX).lower())
    return _shown(name, value)


def _shown(name: str, value: object) -> str:
    if value is None or value == "":
        return "(unset)"
    if is_secret(name):
        return "(set)"
    return mask_dsn(str(value)) if name.endswith("DATABASE_URL") else str(value)


#: Query parameters of a database URL that carry a password (libpq reads both).
_PASSWORD_PARAMETERS = ("password", "sslpassword")


def dsn_has_password(url: str) -> bool:
    """Whether a database URL carries a password, as ``user:password@`` or as ``?password=``."""
    parsed = make_url(url)
    return bool(parsed.password) or any(name in parsed.query for name in _PASSWORD_PARAMETERS)


def mask_dsn(url: str) -> str:
    """A database URL safe to print: the password (``user:password@`` or ``?password=``) is ``***``."""
    try:
        parsed = make_url(url)
        hidden = {name: "***" for name in _PASSWORD_PARAMETERS if name in parsed.query}
        shown = (parsed.update_query_dict(hidden) if hidden else parsed).render_as_string(hide_password=True)
        return shown.replace("%2A%2A%2A", "***")
    except Exception:  # not a URL at all: show nothing that could be a secret
        return "<unparseable database URL>"


def as_psycopg_url(url: str) -> str:
    """The SQLAlchemy URL for the application's driver, psycopg 3."""
    parsed = make_url(url)
    return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)


def as_psycopg2_url(url: str) -> str:
    """The SQLAlchemy URL for Dagster's storage, which needs psycopg2."""
    parsed = make_url(url)
    return parsed.set(drivername="postgresql+psycopg2").render_as_string(hide_password=False)


def as_libpq_dsn(url: str) -> str:
    """A plain ``postgresql://`` URL for libpq tools (psql, pg_dump) and raw psycopg."""
    parsed = make_url(url)
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)
