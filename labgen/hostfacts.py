"""Facts about the machine labgen runs on (read, never changed here)."""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path


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


def is_root() -> bool:
    return os.geteuid() == 0


def missing_tools(tools: dict[str, str]) -> list[str]:
    """`tools` maps command -> Debian package; returns 'cmd (package pkg)' for each missing."""
    return [f"{cmd} (package {pkg})" for cmd, pkg in tools.items() if shutil.which(cmd) is None]
