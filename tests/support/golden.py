"""The golden cases: five labs as `labgen render` writes them (tests/golden/CASE/), rendered
by the real CLI. tests/unit/test_golden.py compares them byte for byte; test_rendered_lint.py
runs each file's own checker on them."""
from __future__ import annotations

from pathlib import Path

from support.cli import ENV, labgen

# case -> render arguments. Every case pins the libvirt driver (auto would probe this host).
CASES = {
    "gre": ["gre", "--libvirt-driver", "qemu"],
    "vxlan": ["vxlan", "--box", "generic/debian12", "--stp", "rstp", "--vni", "5000",
              "--libvirt-driver", "qemu"],
    "gre-3nodes": ["gre", "--nodes", "3", "--provider", "netns"],
    "geneve": ["geneve", "--box", "labgen/debian12", "--vni", "5000", "--libvirt-driver", "qemu"],
    # Across two hypervisors (loopback: the link's addresses do not depend on this machine).
    "gre-split": ["gre", "--box", "labgen/debian12", "--libvirt-driver", "qemu", "--host",
                  "node2=qemu+ssh://root@127.0.0.1/system?keyfile=/root/.ssh/hv-b&no_verify=1"],
}


def render_case(case: str, where: Path, env: dict[str, str] | None = None) -> Path:
    """Render one case with the real CLI into where/lab and return the lab dir. The box cache
    and Vagrant home are empty ones (a box built on this host would add direct kernel boot
    to the Vagrantfile: tests/unit/test_directboot.py), unless env names others."""
    lab_dir = where / "lab"
    env = {**ENV, "LABGEN_CACHE_DIR": str(where / "box-cache"),
           "VAGRANT_HOME": str(where / "vagrant-home"), **(env or {})}
    proc = labgen("render", *CASES[case], "--dir", str(lab_dir), cwd=where, env=env, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return lab_dir
