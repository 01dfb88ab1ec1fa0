"""The one file lock: held for the body's length, refused at once (never waited for) when
another labgen process holds it, with a line that says what holds it."""
from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Callable, Iterator
from pathlib import Path

from labgen.errors import LabgenError


@contextlib.contextmanager
def hold(path: Path, busy: LabgenError,
         unusable: Callable[[OSError], LabgenError] | None = None) -> Iterator[None]:
    """Lock `path` (made if missing) while the body runs; raise `busy` if it is taken, and
    `unusable(error)` if the file cannot be opened (gone, read-only, full)."""
    try:
        fh = path.open("a")
    except OSError as exc:
        if unusable is None:
            raise
        raise unusable(exc) from None
    with fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise busy from None
        yield
