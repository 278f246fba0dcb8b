"""The pool of API keys per platform (``api_credentials``), encrypted at rest, with each key's quota state.

Keys come from settings (``OBSERVATORY_YOUTUBE_API_KEYS``, comma-separated) and enter the pool on first
use, Fernet-encrypted with ``OBSERVATORY_SECRET_KEY`` (as webhook secrets are) and labelled by a
fingerprint (the first 12 hex digits of their SHA-256), so neither a log, a label nor an error ever
holds a key. A key the platform answers "quota spent" rests until its quota day resets (YouTube's day
ends at midnight Pacific time), and the next key is used; the units each key spent on its quota day are
counted. The pool reads and writes through the application database the resources point at.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import Engine, text

from resources.embedded import embedded_secret_key, resolve_database_urls
from resources.postgres import engine_for
from resources.settings import platform_settings

PACIFIC = ZoneInfo("America/Los_Angeles")


class CredentialsError(RuntimeError):
    """The pool cannot be used (no key configured, no secret key to encrypt with); one line, no key in it."""


@dataclass(frozen=True)
class PooledKey:
    """A key ready for use: its row and the key itself (kept in memory only)."""

    id: int
    label: str
    key: str


def fingerprint(key: str) -> str:
    return "key-" + hashlib.sha256(key.encode("utf-8")).hexdigest()[:12]


def quota_reset(now: datetime) -> datetime:
    """When the quota day holding ``now`` ends: the next midnight Pacific time, in UTC."""
    local = now.astimezone(PACIFIC)
    midnight = (local + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return midnight.replace(tzinfo=PACIFIC).astimezone(UTC)


def _cipher() -> Fernet:
    key = embedded_secret_key()
    if not key:
        raise CredentialsError("OBSERVATORY_SECRET_KEY is not set: API keys cannot be encrypted")
    try:
        return Fernet(key)
    except ValueError:
        raise CredentialsError("OBSERVATORY_SECRET_KEY is not a Fernet key (32 url-safe base64 bytes)") from None


def pool_engine() -> Engine:
    """The application database, as the resources resolve it (the embedded server in the demo)."""
    settings = platform_settings()
    return engine_for(settings.database_url or resolve_database_urls(settings)[0])


def enrol(engine: Engine, platform: str, keys: list[str]) -> None:
    """Put ``keys`` in the platform's pool (a key already there, by fingerprint, is left as it is)."""
    if not keys:
        return
    cipher = _cipher()
    rows = [{"platform": platform, "label": fingerprint(k), "secret": cipher.encrypt(k.encode())} for k in keys]
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO api_credentials (platform, label, secret) VALUES (:platform, :label, :secret) "
                "ON CONFLICT (platform, label) DO NOTHING"
            ),
            rows,
        )


def ready_keys(engine: Engine, platform: str, now: datetime) -> list[PooledKey]:
    """The platform's keys not resting at ``now``, in the order they joined the pool."""
    cipher = _cipher()
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT id, label, secret FROM api_credentials WHERE platform = :platform "
                "AND (resting_until IS NULL OR resting_until <= :now) ORDER BY id"
            ),
            {"platform": platform, "now": now},
        ).all()
    keys = []
    for row in rows:
        try:
            keys.append(PooledKey(row.id, row.label, cipher.decrypt(bytes(row.secret)).decode()))
        except InvalidToken:
            raise CredentialsError(f"{row.label} cannot be decrypted with OBSERVATORY_SECRET_KEY") from None
    return keys


def record_use(engine: Engine, key_id: int, units: int, now: datetime, rest_until: datetime | None = None) -> None:
    """Count ``units`` on the key's quota day (a new day starts from zero); with ``rest_until``, rest it."""
    with engine.begin() as conn:
        conn.execute(
            text(
                """
                UPDATE api_credentials
                   SET units_used = CASE WHEN quota_day = :day THEN units_used ELSE 0 END + :units,
                       quota_day = :day, last_used_at = :now,
                       resting_until = coalesce(CAST(:rest AS timestamptz), resting_until)
                 WHERE id = :id
                """
            ),
            {"id": key_id, "units": units, "day": now.astimezone(PACIFIC).date(), "now": now,
             "rest": rest_until},
        )  # fmt: skip
