"""Providers bring a rendered lab to life. REGISTRY is the one list of them; each is one
package here plus its templates in templates/<name>/ and its boxes in boxes/ (docs/development.md:
"Adding a provider"). The CLI and lifecycle talk to the `Provider` protocol below (mypy checks
every provider against it); the model and rendering import no provider: they are handed one
(REGISTERED, labgen/lab/model.py: Providers; labgen/render/files.py: Source)."""
from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Network
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol

from ..errors import InputError

if TYPE_CHECKING:
    import jinja2

    from labgen.lab.model import Lab, Options, ProviderSettings
    from labgen.nodes.runner import Runner
    from labgen.system.owner import Owner

# name -> "module:class", imported only when used (the libvirt provider pulls in paramiko).
REGISTRY: dict[str, str] = {
    "netns": "labgen.providers.netns.provider:NetnsProvider",
    "libvirt": "labgen.providers.libvirt.provider:LibvirtProvider",
}
NAMES = tuple(REGISTRY)

Progress = Callable[[str, str], None]   # (node or "lab", message): the one progress callback

# running: up and reachable; stopped: exists, not running; absent: not created;
# foreign: something of another owner holds this node's name; unknown: could not tell.
NodeState = Literal["running", "stopped", "absent", "foreign", "unknown"]


@dataclass
class NodeStatus:
    node: str
    state: NodeState
    detail: str = ""
    facts: dict[str, str] = field(default_factory=dict)


# whole: every node runs and its create finished; creating: a create or up still running;
# partial: a create, up or destroy that died part way; orphaned: its directory is gone or
# no longer claims it, or nothing records whose it is.
LabState = Literal["whole", "creating", "partial", "orphaned"]


@dataclass(frozen=True)
class Found:
    """A lab found on this host or a hypervisor by its names, whatever state it is in (labgen
    list / prune)."""

    name: str
    provider: str
    host: str                       # "this host", or the URI of the hypervisor it is on
    record: Owner | None            # who it belongs to, when that is recorded
    nodes: tuple[str, ...]
    running: tuple[str, ...]
    resources: tuple[str, ...]      # what removing it takes away, in words

    @property
    def state(self) -> LabState:
        rec = self.record
        if rec is None or not rec.claimed_by_its_dir():
            return "orphaned"
        if rec.creating:
            return "creating"
        if rec.unfinished or len(self.running) < len(self.nodes):
            return "partial"
        return "whole"


class Provider(Protocol):
    # ---- what the model needs to know --------------------------------------------------
    name: ClassVar[str]
    default_box: ClassVar[str]
    datapaths: ClassVar[tuple[str, ...]]     # OVS datapaths it can run; the first is the default
    owns_system_files: ClassVar[bool]        # may the node script change the node's system files
                                             # (/etc/hostname, /etc/hosts, logind's linger)?
    # does the node script set the underlay address on the NIC (labgen/render/files.py: Source)?
    script_sets_underlay_address: ClassVar[bool]
    peer_wait: ClassVar[float]               # the root node's wait for its peers (render's Source)
    remote_nodes: ClassVar[bool]             # may nodes run on other hypervisors (--host)?
    # ---- what verification needs to know (labgen/verify/stages.py: Pace) ----------------------
    stages_apart: ClassVar[bool]             # heavy stages in a group of their own (emulated VMs)
    capture_wait: ClassVar[float]            # how long a tunnel capture may wait for its packets

    def validate(self, opts: Options, underlay: IPv4Network, datapath: str) -> None:
        """Refuse options this provider cannot honour (InputError, one line with the fix)."""

    def settings(self, opts: Options, kvm_usable: bool | None, lab_name: str) -> ProviderSettings | None:
        """This provider's own record of the lab, kept in lab.json under its name (None when it
        has none)."""

    def read_settings(self, lab_json: dict[str, Any], nodes: list[str]) -> ProviderSettings | None:
        """That record from a whole lab.json, also one written by an older labgen."""

    templates: ClassVar[Path]                # its templates folder: templates/<name>/ when shipped

    def files(self, lab: Lab, env: jinja2.Environment) -> dict[str, str]:
        """Extra files of the lab directory, rendered from its templates folder ("<name>/...")."""

    # ---- the host ------------------------------------------------------------------------
    def host_problems(self, lab: Lab) -> list[str]:
        """What this host lacks to run the lab (tools, root, daemons, box), each with its fix."""

    def host_notes(self, lab: Lab) -> list[str]:
        """Fine but worth knowing (software emulation, a box create will download)."""

    def check(self, lab: Lab, lab_dir: Path) -> None:
        """Everything the host needs, before anything is created; raises HostError."""

    # ---- who the lab belongs to (labgen/system/owner.py) -----------------------------------------
    def record(self, lab: Lab) -> Owner | None:
        """The owner recorded on the host for the lab's name (None: nothing recorded)."""

    def write_record(self, lab: Lab, owner: Owner) -> None:
        """Record the owner on the host, before any other resource of the lab exists."""

    # ---- the lab -------------------------------------------------------------------------
    def up(self, lab: Lab, lab_dir: Path, progress: Progress) -> None:
        """Create and provision every node; on a running lab, provision again (no changes)."""

    def destroy(self, lab: Lab, lab_dir: Path, progress: Progress) -> None:
        """Remove everything the lab created; safe on a half-built or absent lab."""

    def status(self, lab: Lab, lab_dir: Path) -> list[NodeStatus]:
        """Per node, in the lab's order."""

    def exists(self, lab: Lab, lab_dir: Path) -> bool:
        """Does any resource of this lab exist on the host?"""

    # ---- the whole host --------------------------------------------------------------------
    def inventory(self, uris: tuple[str, ...] = ()) -> list[Found]:
        """Every lab of this provider on this host (and the hypervisors at uris)."""

    def remove(self, found: Found, progress: Progress) -> None:
        """Remove everything of a found lab, by its names (its directory may be gone)."""

    # ---- the nodes -----------------------------------------------------------------------
    def runner(self, lab: Lab, lab_dir: Path, node: str) -> Runner:
        """Runs verification commands as root on the node."""

    def local_argv(self, lab: Lab, node: str) -> list[str] | None:
        """An argv prefix that runs a command inside the node from this host, or None when
        the node is remote (then exec and capture use the runner's connection)."""

    def shell_argv(self, lab: Lab, lab_dir: Path, node: str) -> list[str]:
        """The command that opens an interactive root shell on the node."""


def get(name: str) -> Provider:
    """The provider called `name`; the one place an unknown provider is refused."""
    try:
        module, cls = REGISTRY[name].split(":")
    except KeyError:
        raise InputError(f"unknown provider {name!r}: use {' or '.join(REGISTRY)}") from None
    provider: Provider = getattr(importlib.import_module(module), cls)()
    return provider


class Registry:
    """The providers, as the lab model asks for them (labgen/lab/model.py: Providers): handed
    to it by the commands, so the model imports no provider."""

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(REGISTRY)      # read when asked: a test may register a provider of its own

    def get(self, name: str) -> Provider:
        return get(name)


REGISTERED = Registry()
