"""Bad input through the real CLI: exit code 2, exactly one line on stderr that says what is
wrong, and nothing written anywhere. Also refused the same way, and needing no root, no Open
vSwitch and no VM: a --dir that runs into a file, exec and capture on a lab that is not up,
and a host that cannot run a netns lab (not root, tools missing)."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from support import cli
from typer.testing import CliRunner

from labgen.cli.app import app

# rich wraps at the terminal width and colours a terminal: neither may split the message.
ENV = {**cli.ENV, "COLUMNS": "400", "NO_COLOR": "1"}


def labgen(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return cli.labgen(*args, cwd=cwd, env=ENV, timeout=60)


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def contents(root: Path) -> dict[str, bytes | None]:
    """Every entry below root with its content (None for directories), hidden ones too."""
    return {str(p.relative_to(root)): (None if p.is_dir() else p.read_bytes()) for p in sorted(root.rglob("*"))}


def error_line(proc: subprocess.CompletedProcess) -> str:
    """The single non-empty stderr line, which must start with 'error:'."""
    lines = [ln.strip() for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected one error line, got {len(lines)}:\n{proc.stderr}"
    assert lines[0].startswith("error:"), lines[0]
    return lines[0]


# (id, render arguments after the tunnel type, fragment the message must contain)
BAD = [
    ("tunnel-type", ["ipip"], "unknown tunnel type 'ipip'"),
    ("underlay-malformed", ["gre", "--underlay", "10.10.10/24x"],
     "underlay '10.10.10/24x' is not a network address in CIDR form"),
    ("underlay-host-bits", ["gre", "--underlay", "10.10.10.5/24"],
     "has host bits set: did you mean --underlay 10.10.10.0/24?"),
    ("underlay-too-small", ["gre", "--underlay", "10.10.10.0/30"],
     "underlay 10.10.10.0/30 is too small for 2 nodes"),
    ("underlay-too-small-8-nodes", ["gre", "--nodes", "8", "--underlay", "10.10.10.0/29"],
     "underlay 10.10.10.0/29 is too small for 8 nodes"),
    ("underlay-ipv6", ["gre", "--underlay", "fd00:10::/64"], "underlay 'fd00:10::/64' is IPv6"),
    ("overlay-malformed", ["gre", "--overlay", "192.168.10.0/33"],
     "overlay '192.168.10.0/33' is not a network address in CIDR form: pass e.g. --overlay 192.168.10.0/24"),
    ("overlay-ipv6", ["gre", "--overlay", "fd00:20::/64"], "overlay 'fd00:20::/64' is IPv6"),
    ("overlay-overlaps-underlay", ["gre", "--overlay", "10.10.0.0/16"],
     "overlay 10.10.0.0/16 overlaps underlay 10.10.10.0/24"),
    ("overlay-too-small", ["gre", "--nodes", "8", "--overlay", "192.168.10.0/26"],
     "overlay 192.168.10.0/26 is too small for 8 nodes"),
    ("nodes-1", ["gre", "--nodes", "1"], "--nodes 1 is out of range"),
    ("nodes-9", ["gre", "--nodes", "9"], "--nodes 9 is out of range"),
    ("unknown-box", ["gre", "--box", "nosuch/box"], "unknown box 'nosuch/box'"),
    ("box-wrong-provider", ["gre", "--provider", "netns", "--box", "centos/stream9"],
     "box 'centos/stream9' is for provider libvirt, not netns"),
    ("host-box-on-libvirt", ["gre", "--box", "host"], "box 'host' is for provider netns, not libvirt"),
    ("name-shell-meta", ["gre", "--name", "a;rm -rf"], "lab name 'a;rm -rf' is not usable"),
    ("name-uppercase", ["gre", "--name", "Lab1"], "lab name 'Lab1' is not usable"),
    ("name-too-long", ["gre", "--name", "a" * 21], f"lab name '{'a' * 21}' is not usable"),
    ("name-leading-digit", ["gre", "--name", "1lab"], "lab name '1lab' is not usable"),
    ("vni-too-big", ["vxlan", "--vni", "16777216"], "VXLAN VNI 16777216 is out of range"),
    ("gre-key-too-big", ["gre", "--key", "4294967296"], "GRE key 4294967296 is out of range"),
    ("gre-key-negative", ["gre", "--key", "-1"], "GRE key -1 is out of range"),
    ("memory-256", ["gre", "--memory", "256"], "--memory 256 MiB is too small"),
    ("cpus-0", ["gre", "--cpus", "0"], "--cpus 0 is out of range"),
    ("datapath-system-netns", ["gre", "--provider", "netns", "--datapath", "system"],
     "--datapath system needs a kernel Open vSwitch module"),
    ("datapath-unknown", ["gre", "--datapath", "dpdk"], "unknown datapath 'dpdk'"),
    ("provider-unknown", ["gre", "--provider", "docker"], "unknown provider 'docker'"),
    ("stp-unknown", ["gre", "--stp", "mstp"], "unknown spanning tree mode 'mstp'"),
    ("stp-timers-unknown", ["gre", "--stp-timers", "fast"], "unknown STP timer set 'fast'"),
    ("libvirt-driver-unknown", ["gre", "--libvirt-driver", "xen"], "unknown libvirt driver 'xen'"),
    ("underlay-mtu-100", ["gre", "--underlay-mtu", "100"], "--underlay-mtu 100 is out of range"),
    ("underlay-mtu-too-big", ["gre", "--underlay-mtu", "9001"], "--underlay-mtu 9001 is out of range"),
    ("underlay-on-the-management-network", ["gre", "--underlay", "198.19.66.0/24"],
     "overlaps 198.19.66.128/27, the management network of lab gre"),
    ("memory-too-big", ["gre", "--memory", "1048577"], "--memory 1048577 MiB is out of range: use 512 to 1048576"),
    ("cpus-65", ["gre", "--cpus", "65"], "--cpus 65 is out of range: use 1 to 64"),
    # Contradicting options: --vni is --key by another name (typer would keep the last one).
    ("key-and-vni", ["gre", "--key", "5", "--vni", "6"], "--key and --vni name the same number: give one"),
    ("vni-and-key-equal", ["vxlan", "--vni", "6", "--key", "6"], "--key and --vni name the same number: give one"),
    # Options that mean nothing to the provider: refused when given, even at their default value.
    ("memory-netns", ["gre", "--provider", "netns", "--memory", "2048"],
     "--memory sets a VM's memory; the netns provider runs no VMs: drop it or use --provider libvirt"),
    ("memory-netns-default-value", ["gre", "--provider", "netns", "--memory", "1024"],
     "--memory sets a VM's memory; the netns provider runs no VMs"),
    ("cpus-netns", ["gre", "--provider", "netns", "--cpus", "1"],
     "--cpus sets a VM's vCPUs; the netns provider runs no VMs: drop it or use --provider libvirt"),
    ("libvirt-driver-netns", ["gre", "--provider", "netns", "--libvirt-driver", "auto"],
     "--libvirt-driver picks how libvirt runs the VMs (kvm or qemu); the netns provider runs no VMs"),
    ("host-netns", ["gre", "--provider", "netns", "--host", "node2=qemu+ssh://root@hv-b/system"],
     "--host places VMs on libvirt hosts; the netns provider runs every node on this machine"),
]


@pytest.mark.parametrize("args,fragment", [pytest.param(a, f, id=i) for i, a, f in BAD])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, args, fragment):
    before = tree(tmp_path)
    proc = labgen(tmp_path, "render", *args, "--dir", str(tmp_path / "lab"))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert fragment in error_line(proc)
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not (tmp_path / "lab").exists()
    assert tree(tmp_path) == before


def test_distinct_bad_inputs():
    assert len({i for i, _, _ in BAD}) == len(BAD) >= 18
    assert len({tuple(a) for _, a, _ in BAD}) == len(BAD)


def test_foreign_dir_is_refused_and_kept_then_force_renders(tmp_path):
    target = tmp_path / "mine"
    target.mkdir()
    keep = target / "notes.txt"
    keep.write_text("my notes\n")
    proc = labgen(tmp_path, "render", "gre", "--provider", "netns", "--dir", str(target))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    line = error_line(proc)
    assert "is not a labgen lab" in line and "--force" in line
    assert sorted(p.name for p in target.iterdir()) == ["notes.txt"]
    assert keep.read_text() == "my notes\n"

    proc = labgen(tmp_path, "render", "gre", "--provider", "netns", "--dir", str(target), "--force")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads((target / "lab.json").read_text())["kind"] == "labgen-lab"
    assert (target / "provision" / "node2.sh").is_file()
    assert keep.read_text() == "my notes\n"


def test_target_that_is_a_file_is_refused(tmp_path):
    target = tmp_path / "lab"
    target.write_text("x")
    proc = labgen(tmp_path, "render", "gre", "--provider", "netns", "--dir", str(target))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "exists and is not a directory" in error_line(proc)
    assert target.read_text() == "x"


def test_existing_lab_that_is_not_running_is_rerendered(tmp_path):
    # A name no other test uses: the netns provider's exists() looks for this lab's namespaces.
    target = tmp_path / "lab"
    common = ["render", "gre", "--provider", "netns", "--name", "t-rerender", "--dir", str(target)]
    first = labgen(tmp_path, *common)
    assert first.returncode == 0, first.stdout + first.stderr
    assert json.loads((target / "lab.json").read_text())["nodes"][0]["tunnels"][0]["type"] == "gre"

    again = labgen(tmp_path, *common[:2], "--nodes", "3", *common[2:])
    assert again.returncode == 0, again.stdout + again.stderr
    lab = json.loads((target / "lab.json").read_text())
    assert len(lab["nodes"]) == 3
    assert (target / "provision" / "node3.sh").is_file()


def test_key_and_vni_each_alone_set_the_key(tmp_path):
    for flag in ("--key", "--vni"):
        d = tmp_path / flag.strip("-")
        proc = labgen(tmp_path, "render", "vxlan", "--provider", "netns", flag, "7", "--dir", str(d))
        assert proc.returncode == 0, proc.stderr
        assert json.loads((d / "lab.json").read_text())["key"] == 7


def test_vm_options_are_taken_by_the_libvirt_provider(tmp_path):
    proc = labgen(tmp_path, "render", "gre", "--memory", "1024", "--cpus", "2", "--libvirt-driver", "qemu",
                  "--dir", str(tmp_path / "lab"))
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "lab" / "lab.json").read_text())["libvirt"]["cpus"] == 2


# ---- the options of create, verify, capture and destroy: before anything is created ---------
NAME = f"tbad{os.getpid() % 100000}"    # create's lab: nothing of it may exist afterwards
# (id, arguments with {tmp} for the test's directory, fragment of the one error line)
RUN_BAD = [
    ("create-junit-under-proc", ["create", "gre", "--provider", "netns", "--junit", "/proc/labgen-x.xml"],
     "cannot write --junit /proc/labgen-x.xml"),
    ("create-junit-is-a-directory", ["create", "gre", "--provider", "netns", "--junit", "{tmp}"],
     "--junit {tmp} is a directory: give a file name in it, e.g. --junit {tmp}/report.xml"),
    ("create-junit-under-a-file", ["create", "gre", "--provider", "netns", "--junit", "{tmp}/afile/r.xml"],
     "cannot write --junit {tmp}/afile/r.xml: {tmp}/afile is a file, not a directory: choose another --junit path"),
    ("verify-junit-under-proc", ["verify", "--junit", "/proc/labgen-x.xml"], "cannot write --junit /proc/labgen-x.xml"),
    ("create-timeout-0", ["create", "gre", "--provider", "netns", "--timeout", "0"],
     "--timeout 0 is out of range: give more than 0 and at most 3600 seconds"),
    ("create-timeout-too-long", ["create", "gre", "--provider", "netns", "--timeout", "3601"],
     "--timeout 3601 is out of range"),
    ("verify-timeout-negative", ["verify", "--timeout", "-1"], "--timeout -1 is out of range"),
    ("verify-timeout-nan", ["verify", "--timeout", "nan"], "--timeout nan is out of range"),
    ("create-destroy-and-keep-on-failure", ["create", "gre", "--provider", "netns", "--destroy", "--keep-on-failure"],
     "--destroy tears the lab down whatever the result and --keep-on-failure keeps a failed one: give one"),
    ("create-memory-netns", ["create", "gre", "--provider", "netns", "--memory", "2048"],
     "--memory sets a VM's memory; the netns provider runs no VMs"),
    ("capture-count-negative", ["capture", "node1", "--count", "-1"],
     "--count -1 is out of range: give 1 to 2147483647 packets, or 0 to stop only on Ctrl-C"),
    ("capture-count-too-big", ["capture", "node1", "--count", "2147483648"], "--count 2147483648 is out of range"),
    ("capture-write-under-proc", ["capture", "node1", "--write", "/proc/labgen-x.pcap"],
     "cannot write --write /proc/labgen-x.pcap"),
    ("capture-write-is-a-directory", ["capture", "node1", "--write", "{tmp}"], "--write {tmp} is a directory"),
    ("destroy-name-netns-with-host", ["destroy", "--name", "x", "--provider", "netns", "--host",
                                      "qemu+ssh://root@hv-b/system"], "--host names libvirt hosts"),
    ("failover-max-outage-negative", ["failover", "--max-outage", "-1"],
     "--max-outage -1 is out of range: give 0 to 3600 seconds"),
    ("failover-timeout-zero", ["failover", "--timeout", "0"], "--timeout 0 is out of range"),
    ("failover-junit-is-a-directory", ["failover", "--junit", "{tmp}"], "--junit {tmp} is a directory"),
    ("create-max-outage-without-failover", ["create", "gre", "--provider", "netns", "--max-outage", "1"],
     "--max-outage gates the outages that --failover measures: add --failover"),
]


@pytest.mark.parametrize("args,fragment", [pytest.param(a, f, id=i) for i, a, f in RUN_BAD])
def test_run_options_are_refused_before_anything_is_created(tmp_path, args, fragment):
    (tmp_path / "afile").write_text("mine\n")
    before = contents(tmp_path)
    argv = [a.format(tmp=tmp_path) for a in args]
    if argv[0] == "create":
        argv += ["--name", NAME, "--dir", str(tmp_path / "lab")]
    proc = labgen(tmp_path, *argv)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert fragment.format(tmp=tmp_path) in error_line(proc)
    assert proc.stdout == "" and "Traceback" not in proc.stderr
    assert contents(tmp_path) == before
    assert not Path(f"/run/labgen/{NAME}").exists()
    assert not list(Path("/run/netns").glob(f"labgen-{NAME}-*"))


def test_distinct_run_options():
    assert len({i for i, _, _ in RUN_BAD}) == len(RUN_BAD)


def test_output_paths_are_probed_without_a_trace(tmp_path):
    """A --junit that can be written passes the probe and leaves nothing: an existing file
    keeps its bytes, a new one and the directories it would need are not made (verify then
    stops for the lab it cannot find, after the probe). --count 0 is in range: Ctrl-C only."""
    (tmp_path / "old.xml").write_text("keep me\n")
    before = contents(tmp_path)
    for args in (["verify", "--junit", "old.xml"], ["verify", "--junit", "new.xml"],
                 ["verify", "--junit", "reports/ci/new.xml", "--timeout", "0.5"],
                 ["capture", "node1", "--count", "0", "--write", "x.pcap"]):
        proc = labgen(tmp_path, *args)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert "no lab here" in error_line(proc), args
        assert contents(tmp_path) == before, args


# ---- a --dir that runs into a file -----------------------------------------------------------
def test_file_in_the_way(tmp_path):
    (tmp_path / "afile").write_text("mine\n")
    proc = labgen(tmp_path, "render", "gre", "--dir", str(tmp_path / "afile" / "lab"))
    assert f"{tmp_path / 'afile'} is a file" in error_line(proc) and proc.returncode == 2
    proc = labgen(tmp_path, "render", "gre", "--dir", str(tmp_path / "afile"))
    assert "not a directory" in error_line(proc) and proc.returncode == 2
    assert proc.stdout == "" and "Traceback" not in proc.stderr
    assert contents(tmp_path) == {"afile": b"mine\n"}


def test_missing_parents_are_not_left_behind(tmp_path):
    """A deep --dir under a file: the parents created on the way are removed again."""
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "f").write_text("")
    proc = labgen(tmp_path, "render", "gre", "--dir", str(tmp_path / "a" / "f" / "x" / "y"))
    assert "is a file" in error_line(proc) and proc.returncode == 2
    assert proc.stdout == "" and "Traceback" not in proc.stderr
    assert contents(tmp_path) == {"a": None, "a/f": b""}


# ---- exec and capture on a lab that is not up ------------------------------------------------
def test_exec_on_a_lab_that_is_not_up(tmp_path):
    lab = tmp_path / "lab"
    assert labgen(tmp_path, "render", "gre", "--provider", "netns", "--name", f"ecn{os.getpid() % 100000}",
                  "--dir", str(lab)).returncode == 0
    for verb, words in ((["exec", "node1", "--dir", str(lab), "--", "true"], ("not running", "labgen up")),
                        (["capture", "node1", "--dir", str(lab)], ("not running",))):
        proc = labgen(tmp_path, *verb)
        assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
        line = error_line(proc)
        assert all(w in line for w in words), line
        assert "Traceback" not in proc.stderr


def test_failover_on_a_lab_that_is_not_up_or_of_a_link_it_lacks(tmp_path):
    lab = tmp_path / "lab"
    assert labgen(tmp_path, "render", "gre", "--provider", "netns", "--name", f"fon{os.getpid() % 100000}",
                  "--dir", str(lab)).returncode == 0
    before = contents(tmp_path)
    for args, words in ((["failover", str(lab)], ("is not up", "labgen up")),
                        (["failover", str(lab), "--link", "b99"],
                         ("--link b99: no such link in this lab; links: node1:a1", "node2:b23", "node1:gre-node2"))):
        proc = labgen(tmp_path, *args)
        assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
        line = error_line(proc)
        assert all(w in line for w in words), line
        assert proc.stdout == "" and "Traceback" not in proc.stderr
    # (the lab's lock file, as verify leaves it: the lab was looked at under its lock)
    assert {k: v for k, v in contents(tmp_path).items() if k != "lab/.labgen.lock"} == before


# ---- a host that cannot run a netns lab ------------------------------------------------------
# The real CLI in-process, with the uid faked at the process boundary: a real unprivileged
# process cannot start the interpreter where it lives under /root, and so these run the same
# on any machine, root or not, with Open vSwitch or without.
def test_not_root_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    d = tmp_path / "lab"
    result = CliRunner().invoke(app, ["create", "gre", "--provider", "netns", "--dir", str(d)])
    assert result.exit_code == 2
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "needs root" in lines[0], result.output
    assert not d.exists()


def test_missing_tools_are_named_with_their_package(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 0)      # root: what is missing is the tools
    monkeypatch.setenv("PATH", str(tmp_path))          # nothing on PATH: ovs-vsctl, tcpdump, ip...
    d = tmp_path / "lab"
    result = CliRunner().invoke(app, ["create", "gre", "--provider", "netns", "--dir", str(d)])
    assert result.exit_code == 2
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "ovs-vsctl (package openvswitch-switch)" in lines[0], result.output
    assert "tcpdump (package tcpdump)" in lines[0]
    assert not d.exists()
