"""Opening a local file only where it is allowed to be: below one of a few directories, with no
symbolic link leading out of them at the moment the file is opened (not only when it was checked).

The final component is opened with ``O_NOFOLLOW`` (a symlink there is refused outright), and the file
actually opened is then located through ``/proc/self/fd``: a directory swapped for a symlink between the
check and the open is caught too.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO


class OutsideRoots(ValueError):
    """A file that is not below the allowed directories, or reached through a symbolic link."""


def is_below(path: Path, roots: Iterable[Path]) -> bool:
    """Whether the resolved ``path`` lies below one of the (resolved) ``roots``."""
    return any(path.is_relative_to(Path(root).resolve()) for root in roots)


def open_below(path: Path, roots: Iterable[Path]) -> BinaryIO:
    """``path`` opened for reading, if the file opened lies below one of ``roots`` and ``path`` itself is
    not a symbolic link; else :class:`OutsideRoots` (and nothing was read)."""
    roots = list(roots)
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as error:
        if Path(path).is_symlink():
            raise OutsideRoots(f"{path} is a symbolic link") from None
        raise error
    try:
        opened = _opened_path(descriptor, path)
        if not is_below(opened, roots):
            raise OutsideRoots(f"{path} leads outside the allowed directories")
        return os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise


def _opened_path(descriptor: int, path: Path) -> Path:
    """Where the open file really is: ``/proc/self/fd`` on Linux; elsewhere the path resolved, provided it
    is still the very file that was opened."""
    link = Path(f"/proc/self/fd/{descriptor}")
    if link.is_symlink():
        return Path(os.readlink(link))
    resolved = Path(path).resolve()
    opened, now = os.fstat(descriptor), os.stat(resolved)
    if (opened.st_dev, opened.st_ino) != (now.st_dev, now.st_ino):
        raise OutsideRoots(f"{path} changed while it was opened")
    return resolved
