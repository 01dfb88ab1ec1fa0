"""What goes into a locally built box, read from its file in boxes/ (the `[recipe]` table of
a box that has `build = "NAME"`): one place for the box's description and its recipe.

Only the shipped box files hold recipes: the build steps they feed are this package's code.
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..resources import resource_dir
from .errors import BoxBuildError


@dataclass(frozen=True)
class BoxRecipe:
    box_name: str       # the Vagrant box name, the box file's `name`
    suite: str          # Debian release debootstrap installs
    base_version: str   # the box version is this plus a digest (labgen/boxbuild/version.py)
    packages: tuple[str, ...]   # in the file's order: the order is part of the box version
    disk_gib: int
    hostname: str


FIELDS = ("suite", "base_version", "packages", "disk_gib", "hostname")


def recipes(directory: Path | None = None) -> dict[str, BoxRecipe]:
    """Every recipe by its build name (`labgen box build NAME`), from the box files."""
    found = {}
    for path in sorted((directory or resource_dir("boxes")).glob("*.toml")):
        try:
            data = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise BoxBuildError(f"box file {path} is invalid ({exc}): fix it") from None
        if "recipe" in data:
            found[data.get("build", "")] = _recipe(path, data)
    return found


def _recipe(path: Path, data: dict[str, Any]) -> BoxRecipe:
    table = data["recipe"]
    fine = (isinstance(table, dict) and data.get("build") and isinstance(data.get("name"), str)
            and all(k in table for k in FIELDS) and isinstance(table["packages"], list)
            and all(isinstance(p, str) and p for p in table["packages"])
            and all(isinstance(table[k], str) for k in ("suite", "base_version", "hostname"))
            and isinstance(table["disk_gib"], int))
    if not fine:
        raise BoxBuildError(f"box file {path}: a [recipe] needs the box's build and name, and "
                            f"{', '.join(FIELDS)} (packages: a list of names, disk_gib: an "
                            f"integer, the others text): fix the file")
    return BoxRecipe(box_name=data["name"], suite=table["suite"],
                     base_version=table["base_version"], packages=tuple(table["packages"]),
                     disk_gib=table["disk_gib"], hostname=table["hostname"])


def get_recipe(name: str, directory: Path | None = None) -> BoxRecipe:
    known = recipes(directory)
    try:
        return known[name]
    except KeyError:
        raise BoxBuildError(f"unknown box {name!r}: known boxes are "
                            f"{', '.join(sorted(known))}") from None
