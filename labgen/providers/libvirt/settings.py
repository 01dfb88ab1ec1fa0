"""What only VM labs have, kept in lab.json under the provider's key ("libvirt"): the size of
each VM, the libvirt driver, the hypervisors, the UDP links of a lab across hypervisors and
the subnet of the lab's management network."""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from labgen.errors import ProviderError
from labgen.lab.model import Lab
from labgen.providers.libvirt.hypervisors import SPLIT_UNDERLAY_MTU, Hypervisor, UdpLink, plan


@dataclass(frozen=True)
class LibvirtSettings:
    """The size of each VM and the libvirt driver (kvm or qemu, resolved from auto when the
    lab is built)."""

    memory: int
    cpus: int
    driver: str
    # The hypervisors (named "hosts" here and in lab.json, as lab files already written have
    # it) and, on a lab across hypervisors, the UDP link of each node's underlay NIC.
    hosts: tuple[Hypervisor, ...] = ()
    links: tuple[UdpLink, ...] = ()
    # The lab's own management network's subnet (management.py), on each hypervisor; "" in a
    # lab.json from before it: such a lab stays on vagrant-libvirt's shared network.
    management: str = ""

    @property
    def split(self) -> bool:
        return len(self.hosts) > 1

    @property
    def underlay_mtu(self) -> int | None:
        """A lab across hypervisors carries its underlay in UDP between them: a smaller default."""
        return SPLIT_UNDERLAY_MTU if self.split else None

    @property
    def emulated(self) -> bool:
        """Software emulation (the qemu driver): the guests' CPU is QEMU's, not the host's."""
        return self.driver == "qemu"

    @property
    def boot_timeout(self) -> int:
        """Vagrant's wait for a guest's SSH, in seconds. Emulated guests (qemu driver) reached
        SSH 180-199 s after boot on the slowest machines recorded (docs/benchmarks.md): twice
        that, rounded up. With KVM, Vagrant's own default."""
        return 400 if self.emulated else 300

    def link(self, node: str) -> UdpLink | None:
        return next((ln for ln in self.links if ln.node == node), None)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LibvirtSettings:
        hvs = tuple(Hypervisor(**{**h, "nodes": tuple(h["nodes"])}) for h in d.get("hosts", ()))
        return cls(memory=d["memory"], cpus=d["cpus"], driver=d["driver"], hosts=hvs,
                   links=tuple(UdpLink(**ln) for ln in d.get("links", ())),
                   management=d.get("management", ""))

    @classmethod
    def read(cls, lab_json: dict[str, Any], nodes: list[str]) -> LibvirtSettings | None:
        """The settings in a whole lab.json, also one written by an older labgen."""
        if "libvirt" in lab_json:
            settings = cls.from_dict(lab_json["libvirt"]) if lab_json["libvirt"] else None
        else:   # a lab.json from before the libvirt record: the settings were top-level
            settings = cls(lab_json["memory"], lab_json["cpus"], lab_json["libvirt_driver"])
        if settings is not None and not settings.hosts:   # from before hypervisors: all on this one
            settings = replace(settings, hosts=plan((), nodes))
        return settings


def settings_of(lab: Lab) -> LibvirtSettings:
    """A VM lab's settings (a lab without them was rendered by a broken labgen)."""
    if not isinstance(lab.settings, LibvirtSettings):
        raise ProviderError(f"lab {lab.name} has no libvirt settings: render it again")
    return lab.settings
