"""Reading what a server asks of us in its headers: the one ``Retry-After`` parser.

Polling (a host that asks not to be asked again before a moment) and webhook delivery (a receiver that
asks for a later retry) both read ``Retry-After`` here. Whatever a server sends, the answer is a
bounded wait or no wait at all: a malformed value never raises and never blocks for long.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from email.utils import mktime_tz, parsedate_tz

#: Longest wait a server can ask for; a ``Retry-After`` further away (the year 9999) is cut to this.
MAX_RETRY_AFTER = timedelta(hours=24)
_SECONDS = re.compile(r"[0-9]{1,20}")  # ASCII digits only: "²".isdigit() is true, int("²") is not
#: A date's zone: an offset (``-0000``: UTC, local zone unknown) or a name ``email.utils`` knows.
_ZONE = re.compile(r"\s(?:[+-][0-9]{4}|GMT|UTC?|Z|[ECMP][SD]T)$", re.IGNORECASE)


def retry_after_seconds(value: str | None, now: datetime) -> float | None:
    """``Retry-After`` as seconds from ``now`` (aware), at most 24 h; a date in the past is 0.

    Delta-seconds or an HTTP date with a zone (``GMT``, ``+0200``, ``-0000``...). None when the header is
    absent or unusable: garbage, a negative number, a date without a zone."""
    if not value:
        return None
    value = value.strip()
    cap = MAX_RETRY_AFTER.total_seconds()
    if _SECONDS.fullmatch(value):
        return min(float(value), cap)
    parts = parsedate_tz(value) if _ZONE.search(value) else None  # without a zone it reads as UTC
    if parts is None:
        return None
    try:
        moment = datetime.fromtimestamp(mktime_tz(parts), UTC)
    except (OverflowError, ValueError, OSError):
        return None
    return min(max((moment - now).total_seconds(), 0.0), cap)


def retry_after_moment(value: str | None, now: datetime) -> datetime | None:
    """The moment ``Retry-After`` asks to wait until (see :func:`retry_after_seconds`), or None."""
    seconds = retry_after_seconds(value, now)
    return None if seconds is None else now + timedelta(seconds=seconds)
