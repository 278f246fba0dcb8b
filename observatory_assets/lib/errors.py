"""Failure messages that are safe to store and show."""

from __future__ import annotations

import re

#: Longest error text kept in a status row (``collection_runs.error``, ``exports.error``, ``backups.error``).
MAX_ERROR_CHARS = 2000
_CREDENTIALS_IN_URL = re.compile(r"(\w+://[^:/@\s]+:)[^@\s]+@")


def failure_message(error: BaseException | str) -> str:
    """``Type: message`` of ``error``, with any password in a URL masked, cut to :data:`MAX_ERROR_CHARS`."""
    message = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    return _CREDENTIALS_IN_URL.sub(r"\1***@", message)[:MAX_ERROR_CHARS]
