"""The one error of the box builder."""
from __future__ import annotations

from ..errors import LabgenError


class BoxBuildError(LabgenError):
    """A box cannot be built; the message is one line: what is wrong and how to fix it."""
