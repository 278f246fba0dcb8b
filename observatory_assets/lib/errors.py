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


#: S3 error codes that mean the keys are wrong or not allowed.
_S3_KEY_ERRORS = {"SignatureDoesNotMatch", "InvalidAccessKeyId", "AccessDenied", "InvalidToken"}


def one_line(error: BaseException, reported: tuple[type[BaseException], ...] = ()) -> tuple[str, int] | None:
    """What a person at the command line reads for ``error`` (one line, secrets masked) and the exit code:
    2 for a mistake in their input or configuration, 1 for a service that is unreachable or refused.
    ``reported`` are errors whose message already says it all (a service's failure). None for an unexpected
    error: that is a bug, and its traceback is what a developer needs."""
    import psycopg
    import sqlalchemy.exc
    import urllib3.exceptions
    from minio.error import MinioException, S3Error

    from observatory_assets.lib.migrations import SchemaNotCurrentError
    from resources.outbound import OutboundError
    from resources.postgres import UnsupportedServerError

    def first_line(text: object) -> str:
        return next((line.strip() for line in str(text).splitlines() if line.strip()), type(error).__name__)

    if isinstance(error, reported) or isinstance(error, SchemaNotCurrentError | UnsupportedServerError):
        line, code = str(error), 1
    elif isinstance(error, sqlalchemy.exc.OperationalError | sqlalchemy.exc.InterfaceError | psycopg.OperationalError):
        cause = getattr(error, "orig", None) or error
        line, code = f"the database is unreachable or refused the connection: {first_line(cause)}", 1
    elif isinstance(error, S3Error):
        hint = (
            " (check OBSERVATORY_S3_ACCESS_KEY and OBSERVATORY_S3_SECRET_KEY)" if error.code in _S3_KEY_ERRORS else ""
        )
        line, code = f"object storage refused the request: {error.code}: {error.message}{hint}", 1
    elif isinstance(error, urllib3.exceptions.HTTPError | MinioException):
        line, code = f"object storage is unreachable: {first_line(getattr(error, 'reason', None) or error)}", 1
    elif isinstance(error, FileNotFoundError):
        line, code = f"no such file: {error.filename or first_line(error)}", 2
    elif isinstance(error, OSError):
        line, code = first_line(f"{error.strerror or error}: {error.filename}" if error.filename else error), 1
    elif isinstance(error, ValueError):
        line, code = first_line(error), 2
    elif isinstance(error, OutboundError):
        line, code = first_line(error), 1
    else:
        return None
    return failure_message(line), code
