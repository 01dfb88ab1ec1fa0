"""Helpers for the VM end-to-end tests: what libvirt holds of a lab."""
from __future__ import annotations

import subprocess

EMPTY = {"domains": [], "networks": [], "volumes": []}


def libvirt_names(prefix: str) -> dict[str, list[str]]:
    def names(*args: str) -> list[str]:
        out = subprocess.run(["virsh", "-c", "qemu:///system", *args], capture_output=True,
                             text=True).stdout
        return [ln.split()[0] for ln in out.splitlines() if ln.strip().startswith(prefix)]
    return {"domains": names("list", "--all", "--name"), "networks": names("net-list", "--all", "--name"),
            "volumes": names("vol-list", "default")}
