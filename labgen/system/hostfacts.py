"""Facts about the machine labgen runs on (read, never changed here).

The map from each system command to the Debian package that ships it lives here, in
Python, so a labgen installed from a wheel into any venv names the packages a host lacks
with the one `apt-get install` line that adds them all (scripts/setup installs the same)."""
from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path

# Commands labgen, Vagrant or libvirt run -> the Debian package (12 and 13) that ships them.
# A key that is an absolute path is a file that must exist (found by its owner, not by PATH).
DEBIAN_PACKAGES: dict[str, str] = {
    # the netns provider and the node script on emulated nodes
    "ovs-vsctl": "openvswitch-switch",
    "ovs-vswitchd": "openvswitch-switch",
    "ovsdb-server": "openvswitch-switch",      # (from openvswitch-common, which it pulls in)
    "ovsdb-tool": "openvswitch-switch",
    "/usr/share/openvswitch/vswitch.ovsschema": "openvswitch-switch",
    "ip": "iproute2",
    "tcpdump": "tcpdump",
    "ethtool": "ethtool",
    "ping": "iputils-ping",
    "sysctl": "procps",
    "unshare": "util-linux",
    "nsenter": "util-linux",
    "mountpoint": "util-linux",
    "mount": "mount",
    "umount": "mount",
    # the libvirt provider: Vagrant + vagrant-libvirt drive libvirtd, which runs qemu and,
    # for Vagrant's management network, dnsmasq (a Recommends that --no-install-recommends
    # drops: libvirt then fails with "Unable to find 'dnsmasq' binary in $PATH")
    "vagrant": "vagrant",
    "virsh": "libvirt-clients",
    "libvirtd": "libvirt-daemon-system",
    "qemu-system-x86_64": "qemu-system-x86",
    "qemu-img": "qemu-utils",
    "dnsmasq": "dnsmasq-base",
}
# Daemons and their helpers are found by libvirt in sbin, which a normal user's PATH lacks.
SYSTEM_DIRS = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")


def kvm_usable(dev: Path = Path("/dev/kvm"), cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """KVM only where /dev/kvm exists AND the CPU advertises vmx/svm: some hosts expose a
    /dev/kvm (e.g. a PVM host) on which a stock guest kernel aborts or hangs."""
    if not dev.exists():
        return False
    try:
        flags = cpuinfo.read_text()
    except OSError:
        return False
    return re.search(r"^flags\s*:.*\b(vmx|svm)\b", flags, re.M) is not None


def kvm_access_drift(dev: Path = Path("/dev/kvm")) -> str | None:
    """What is wrong, when /dev/kvm exists but is not in group kvm with group read-write
    (Debian's udev rule: group kvm, mode 0660), as on a machine with no udev to apply it.
    Then libvirt's QEMU user (in group kvm) may not open it while QEMU's probe can, so libvirt
    finds its cached capabilities stale on every call and probes QEMU again: seconds per
    call, minutes per `vagrant up` (docs/benchmarks.md). None when all is well or no kvm."""
    import grp
    try:
        st, kvm = dev.stat(), grp.getgrnam("kvm").gr_gid
    except (OSError, KeyError):
        return None
    wrong = []
    if st.st_gid != kvm:
        try:
            group = grp.getgrgid(st.st_gid).gr_name
        except KeyError:
            group = str(st.st_gid)
        wrong.append(f"in group {group}, not kvm")
    if st.st_mode & 0o060 != 0o060:
        wrong.append(f"mode {st.st_mode & 0o7777:04o}, not group read-write")
    return f"{dev} is {' and '.join(wrong)}" if wrong else None


# What fix_kvm_access does, as a command for the user.
KVM_FIX = "chgrp kvm /dev/kvm && chmod g+rw /dev/kvm"


def fix_kvm_access(dev: Path = Path("/dev/kvm")) -> None:
    """What udev does at boot where there is one: group kvm, group read-write (needs root)."""
    import grp
    os.chown(dev, -1, grp.getgrnam("kvm").gr_gid)
    os.chmod(dev, dev.stat().st_mode & 0o7777 | 0o660)


def is_root() -> bool:
    return os.geteuid() == 0


def have(tool: str, system_dirs: bool = False) -> bool:
    """`tool` is an existing absolute path, or a command on PATH (with `system_dirs`, also in
    the standard bin/sbin directories: for programs another daemon runs, not labgen)."""
    if tool.startswith("/"):
        return Path(tool).exists()
    if shutil.which(tool) is not None:
        return True
    return system_dirs and shutil.which(tool, path=os.pathsep.join(SYSTEM_DIRS)) is not None


def missing_tools(tools: Mapping[str, str], system_dirs: Iterable[str] = ()) -> list[str]:
    """`tools` maps command -> Debian package; returns 'cmd (package pkg)' for each missing.
    Commands named in `system_dirs` also count when found outside PATH (see `have`)."""
    sysdirs = set(system_dirs)
    return [f"{cmd} (package {pkg})" for cmd, pkg in tools.items()
            if not have(cmd, system_dirs=cmd in sysdirs)]


def packages_of(missing: Iterable[str]) -> list[str]:
    """The packages named in `missing_tools` lines, each once, in order."""
    pkgs: list[str] = []
    for item in missing:
        m = re.search(r"\(package ([^)\s]+)\)\s*$", item)
        if m and m[1] not in pkgs:
            pkgs.append(m[1])
    return pkgs


def apt_install_command(packages: Iterable[str]) -> str:
    """The one command that installs every package (sudo unless we are root)."""
    pkgs = list(dict.fromkeys(packages))
    return ("" if is_root() else "sudo ") + "apt-get install -y " + " ".join(pkgs)


def missing_line(missing: list[str]) -> str:
    """One problem line: every missing command with its package, then the one apt command."""
    return (f"missing on this host: {', '.join(missing)}: install them with: "
            f"{apt_install_command(packages_of(missing))}")
