"""The box catalog: one TOML file per box in `boxes/`, read into Box records.

A box says how Open vSwitch gets installed and started on it; the node script takes those
steps from here, so supporting a new OS is adding a file, not editing the template.
"""
from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path

from .errors import InputError
from .resources import resource_dir

FAMILIES = ("rhel", "debian", "host")
PROVIDERS = ("libvirt", "netns")


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

    def to_dict(self) -> dict:
        d = asdict(self)
        d["providers"] = list(self.providers)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Box":
        return cls(**{**d, "providers": tuple(d["providers"])})


def _load(path: Path) -> Box:
    try:
        data = tomllib.loads(path.read_text())
        box = Box(
            name=data["name"], description=data["description"], family=data["family"],
            providers=tuple(data["providers"]), install=data["install"].strip(),
            start=data["start"].strip(), url=data.get("url", ""), note=data.get("note", ""),
            build=data.get("build", ""),
        )
    except (tomllib.TOMLDecodeError, KeyError, TypeError) as exc:
        raise InputError(f"box file {path} is invalid ({exc}): fix or remove it") from exc
    if box.family not in FAMILIES or not set(box.providers) <= set(PROVIDERS):
        raise InputError(f"box file {path}: family must be one of {', '.join(FAMILIES)} and "
                         f"providers among {', '.join(PROVIDERS)}")
    return box


def catalog(directory: Path | None = None) -> dict[str, Box]:
    """All boxes by name, sorted; `directory` defaults to the shipped boxes/ folder."""
    folder = directory or resource_dir("boxes")
    boxes = [_load(p) for p in sorted(folder.glob("*.toml"))]
    return {b.name: b for b in sorted(boxes, key=lambda b: b.name)}


def get(name: str, directory: Path | None = None) -> Box:
    boxes = catalog(directory)
    if name not in boxes:
        raise InputError(f"unknown box {name!r}: choose one of {', '.join(boxes)} "
                         f"(labgen boxes lists them) or add a file to boxes/")
    return boxes[name]
