"""Where the shipped data folders (templates/, boxes/) are, installed or in a checkout."""
from __future__ import annotations

from pathlib import Path

_PKG = Path(__file__).resolve().parent


def resource_dir(name: str) -> Path:
    # The wheel puts them inside the package; a source checkout has them at the top level.
    for candidate in (_PKG / name, _PKG.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"labgen data folder {name!r} is missing from the installation")
