"""Providers bring a rendered lab to life. They share one small contract; the CLI and the
verification engine never know which one they talk to."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

from ..model import Lab
from ..runner import Runner

Progress = Callable[[str, str], None]   # (node or "lab", message)


@dataclass
class NodeStatus:
    node: str
    state: str                      # running | stopped | absent | unknown
    detail: str = ""
    facts: dict[str, str] = field(default_factory=dict)


class Provider(Protocol):
    name: str

    def host_problems(self, lab: Lab) -> list[str]:
        """What this host lacks to run the lab (tools, root, daemons, box), each with its fix."""

    def check(self, lab: Lab, lab_dir: Path) -> None:
        """Everything the host needs, before anything is created; raises HostError."""

    def up(self, lab: Lab, lab_dir: Path, progress: Progress) -> None:
        """Create and provision every node; on a running lab, provision again (no changes)."""

    def destroy(self, lab: Lab, lab_dir: Path, progress: Progress) -> None:
        """Remove everything the lab created; safe on a half-built or absent lab."""

    def status(self, lab: Lab, lab_dir: Path) -> list[NodeStatus]: ...

    def exists(self, lab: Lab, lab_dir: Path) -> bool:
        """Does any resource of this lab exist on the host?"""

    def runner(self, lab: Lab, lab_dir: Path, node: str) -> Runner: ...


def get(name: str) -> Provider:
    # Imported lazily: the libvirt provider pulls in python-vagrant and paramiko.
    if name == "netns":
        from .netns import NetnsProvider
        return NetnsProvider()
    if name == "libvirt":
        from .libvirt import LibvirtProvider
        return LibvirtProvider()
    raise KeyError(name)
