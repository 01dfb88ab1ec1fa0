"""The box catalog: one TOML file per box in `boxes/`, read into Box records.

A box says how Open vSwitch gets installed and started on it; the node script takes those
steps from here, so supporting a new OS is adding a file, not editing the template.
Box files of your own can live outside the package: LABGEN_BOXES_DIR=/dir1:/dir2.
"""
from __future__ import annotations

import os
import tomllib
from collections.abc import Collection
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from labgen.errors import InputError
from labgen.resources import resource_dir

FAMILIES = ("rhel", "debian", "host")
# Vagrant's guest plugin of each family ("host" boxes are never Vagrant's).
VAGRANT_GUESTS = {"rhel": "redhat", "debian": "debian", "host": "linux"}


@dataclass(frozen=True)
class Box:
    name: str
    description: str
    family: str
    providers: tuple[str, ...]
    install: str        # shell: installs Open vSwitch and tcpdump (run only when missing)
    start: str          # shell: starts Open vSwitch (run only when ovs-vsctl does not answer)
    url: str = ""       # download URL, when the box is not in Vagrant's catalog
    note: str = ""      # shown in `labgen boxes`, e.g. end of life
    build: str = ""     # name for `labgen box build`, for boxes made locally
    # The CPU model QEMU emulates for this box under software emulation (the qemu driver);
    # "" keeps libvirt's host-model. Only where the box's OS is known to run on it.
    emulated_cpu: str = ""

    @property
    def vagrant_guest(self) -> str:
        """Vagrant's guest type for this box. Named, so that Vagrant does not detect it: its
        detection runs ~40 probe commands over SSH, ~21 s on an emulated guest."""
        return VAGRANT_GUESTS[self.family]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["providers"] = list(self.providers)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Box:
        return cls(**{**d, "providers": tuple(d["providers"])})


def _load(path: Path, providers: Collection[str]) -> Box:
    try:
        data = tomllib.loads(path.read_text())
        box = Box(
            name=data["name"], description=data["description"], family=data["family"],
            providers=tuple(data["providers"]), install=data["install"].strip(),
            start=data["start"].strip(), url=data.get("url", ""), note=data.get("note", ""),
            build=data.get("build", ""), emulated_cpu=data.get("emulated_cpu", ""),
        )
    except (tomllib.TOMLDecodeError, KeyError, TypeError) as exc:
        raise InputError(f"box file {path} is invalid ({exc}): fix or remove it") from exc
    if box.family not in FAMILIES or not set(box.providers) <= set(providers):
        raise InputError(f"box file {path}: family must be one of {', '.join(FAMILIES)} and "
                         f"providers among {', '.join(providers)}")
    return box


# More box files, outside the installed package: a colon-separated list of directories.
# A box here with the name of a shipped one replaces it.
EXTRA_DIRS_ENV = "LABGEN_BOXES_DIR"


def catalog(directory: Path | None = None, *, providers: Collection[str]) -> dict[str, Box]:
    """All boxes by name, sorted; `directory` defaults to the shipped boxes/ folder plus
    the directories in $LABGEN_BOXES_DIR. A box names only `providers` (the registry's)."""
    folders = [directory] if directory else [resource_dir("boxes")] + [
        Path(d) for d in os.environ.get(EXTRA_DIRS_ENV, "").split(":") if d]
    boxes: dict[str, Box] = {}
    for folder in folders:
        if directory is None and folder != folders[0] and not folder.is_dir():
            raise InputError(f"{EXTRA_DIRS_ENV} names {folder}, which is not a directory: "
                             f"fix or unset it")
        for path in sorted(folder.glob("*.toml")):
            box = _load(path, providers)
            boxes[box.name] = box
    return dict(sorted(boxes.items()))


def get(name: str, directory: Path | None = None, *, providers: Collection[str]) -> Box:
    boxes = catalog(directory, providers=providers)
    if name not in boxes:
        raise InputError(f"unknown box {name!r}: choose one of {', '.join(boxes)} "
                         f"(labgen boxes lists them) or add a file to boxes/")
    return boxes[name]
