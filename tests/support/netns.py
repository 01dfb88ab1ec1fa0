"""For the end-to-end tests on real OVS in namespaces: enter a node, and read what the host
has (to prove that tear-down leaves nothing). The CLI itself: support.cli."""
from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

from labgen.lab.model import HANDLE_ROOT, lab_prefix
from support.cli import labgen


def node_cmd(lab: str, node: str, cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run a shell command inside an emulated node (as a user poking at the lab would)."""
    handles = HANDLE_ROOT / lab
    argv = ["nsenter", f"--net=/run/netns/{lab_prefix(lab)}-{node}", f"--mount={handles}/{node}.mnt",
            f"--uts={handles}/{node}.uts", "--", "sh", "-c", cmd]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd!r} on {node} failed: {proc.stderr}")
    return proc


def host_state() -> dict[str, list[str]]:
    """What a lab could leave behind on the host: namespaces, mounts, links, OVS daemons."""
    netns = sorted(Path("/run/netns").iterdir()) if Path("/run/netns").exists() else []
    mounts = [ln.split()[4] for ln in Path("/proc/self/mountinfo").read_text().splitlines()
              if str(HANDLE_ROOT) in ln or "/run/netns/" in ln]
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    ovs = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                comm = (proc / "comm").read_text().strip()
                state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                continue
            if state == "Z":    # exited, waiting for init to reap it: holds nothing
                continue
            if comm in ("ovs-vswitchd", "ovsdb-server"):
                ovs.append(f"{comm}:{proc.name}")
    return {"netns": [p.name for p in netns], "mounts": sorted(mounts),
            # (libvirt's vnet*/virbr* come and go with VMs of other tests, never from netns labs)
            "links": sorted(name for name in (ln.split(":")[1].strip().split("@")[0] for ln in links.splitlines())
                            if not name.startswith(("vnet", "virbr"))),
            "ovs": sorted(ovs), "handles": sorted(str(p) for p in HANDLE_ROOT.glob("*"))
            if HANDLE_ROOT.exists() else []}


def checks(proc: subprocess.CompletedProcess) -> list[dict]:
    """The checks of a `--json` report."""
    return json.loads(proc.stdout)["checks"]



def netns_lab(tmp_path_factory, tunnel: str, name: str, *extra: str, timeout: float = 240,
              check: bool = True) -> Iterator[tuple[Path, subprocess.CompletedProcess]]:
    """The one netns lab of a test module (yield from it in a module-scoped fixture): made
    with `labgen create TUNNEL --provider netns --name NAME --dir ... EXTRA`, yields its
    directory and that create's result (check=False: a create that may fail, for the module
    to judge), then destroyed; the host is left as the fixture found it."""
    before = host_state()
    d = tmp_path_factory.mktemp(name) / "lab"
    proc = labgen("create", tunnel, "--provider", "netns", "--name", name, "--dir", str(d), *extra,
                  timeout=timeout)
    try:
        if check:
            assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        yield d, proc
    finally:
        res = labgen("destroy", str(d))
    assert res.returncode == 0 or not d.exists(), res.stderr
    assert host_state() == before
