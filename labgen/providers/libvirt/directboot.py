"""Direct kernel boot of a box labgen built on this host: libvirt starts the guest on the
box's own kernel and initramfs, which `labgen box build` keeps in its cache, with the
kernel command line GRUB would give. The BIOS's disk reads and GRUB are skipped: ~6 s of
each guest's boot under software emulation (docs/benchmarks.md).

Only where the files are: a locally built box, a lab on this host's libvirt (a remote
hypervisor has no such files), the record of the box's last build, its kernel and
initramfs, and that box version in Vagrant. The Vagrantfile then pins that version, so the
kernel always matches the disk it boots. Anything missing: the box boots through GRUB, as
any box does.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from labgen.boxbuild.cache import boot_record, resolve_cache_dir
from labgen.lab.boxes import Box
from labgen.vagrant.command import box_dir_name, user_home

from .hypervisors import Hypervisor


@dataclass(frozen=True)
class DirectBoot:
    version: str      # the box version whose kernel this is (the Vagrantfile pins it)
    kernel: str
    initrd: str
    cmdline: str      # the box's (GRUB's), plus EMULATED_KERNEL_ARGS under software emulation
    box_dir: str      # Vagrant's copy of that box version: checked again when Vagrant runs


# Kernel arguments for a guest under software emulation (the qemu driver) only:
# - mitigations=off: the kernel's defences against speculative-execution attacks (retpolines,
#   return thunks, barriers on copies from user space) are shaped for a real CPU's branch
#   predictors; QEMU's emulated CPU has none, and they cost every system call and interrupt
#   of the one emulated CPU. With KVM the guest runs on the real CPU: the defaults stay.
# Measured in docs/benchmarks.md.
EMULATED_KERNEL_ARGS = ("mitigations=off",)


def direct_boot(box: Box, hv: Hypervisor, cache: Path | None = None,
                home: Path | None = None, *, emulated: bool = False) -> DirectBoot | None:
    """How the nodes of `hv` boot `box` directly, or None (they boot through GRUB);
    `emulated`: under software emulation (the qemu driver)."""
    if not box.build or hv.remote:
        return None
    try:
        record = json.loads(boot_record(resolve_cache_dir(cache), box.name).read_text())
        version, kernel, initrd = record["version"], record["kernel"], record["initrd"]
        cmdline = record["cmdline"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    box_dir = (home or user_home()) / "boxes" / box_dir_name(box.name) / str(version) / "libvirt"
    if not (Path(kernel).is_file() and Path(initrd).is_file() and box_dir.is_dir()):
        return None
    if emulated:
        cmdline = " ".join([str(cmdline), *EMULATED_KERNEL_ARGS])
    return DirectBoot(str(version), str(kernel), str(initrd), str(cmdline), str(box_dir))
