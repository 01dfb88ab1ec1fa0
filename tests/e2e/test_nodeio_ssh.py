"""`labgen exec` and `labgen capture` over SSH, the way they reach a VM: a real OpenSSH server
on loopback (the `sshd` fixture, support.sshd), a real tcpdump on this host's `lo`, real UDP
packets to port 4789. The node is this host, reached through SSHRunner; only which host that
is (and that its underlay NIC is `lo`) is set up here, in a small driver run as its own
process so that Ctrl-C (SIGINT) and the exit code are the real ones."""
from __future__ import annotations

import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
from support import sshd as ssh_server
from support.cli import ctrl_c_heard

pytestmark = pytest.mark.skipif(
    not (ssh_server.available() and shutil.which("tcpdump")),
    reason="needs root, /usr/sbin/sshd, ssh-keygen and tcpdump")

DRIVER = r"""
import sys
from pathlib import Path
from labgen.cli import nodeio
from labgen.lab.model import Options
from labgen.lifecycle import build_lab
from labgen.providers.libvirt.provider import LibvirtProvider
from labgen.nodes.ssh import SSHRunner, SSHTarget

port, key, verb, *rest = sys.argv[1:]
class Provider(LibvirtProvider):     # the VM provider, its node1 is this host over SSH
    def runner(self, lab, lab_dir, node):
        return SSHRunner(node, SSHTarget("127.0.0.1", int(port), "root", key), connect_timeout=5)
lab = build_lab(Options(tunnel="vxlan", provider="libvirt", box="labgen/debian12"), kvm_usable=False)
t = nodeio.Target(lab, Path("."), Provider(), "node1")
if verb == "exec":
    ns = None
    if rest[0] == "--ns":
        ns, rest = rest[1], rest[2:]
    sys.exit(nodeio.run_exec(t, rest, ns))
nodeio.underlay_nic = lambda target: "lo"
count, write = int(rest[0]), (Path(rest[1]) if len(rest) > 1 else None)
sys.exit(nodeio.run_capture(t, count, write, note=lambda s: print("note:", s, file=sys.stderr)))
"""


def packets(text: str) -> list[str]:
    """The first line of each packet tcpdump printed (it starts with the timestamp)."""
    return re.findall(r"^\d\d:\d\d:\d\d\.\d{6} .*$", text, re.M)


def driver(sshd, *args, **kwargs):
    return subprocess.Popen([sys.executable, "-c", DRIVER, str(sshd.port), str(sshd.key), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=ctrl_c_heard, **kwargs)


@pytest.fixture
def vxlan_traffic():
    """UDP datagrams to 127.0.0.1:4789 every 50 ms while the test runs."""
    stop = threading.Event()

    def send() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            while not stop.wait(0.05):
                s.sendto(b"\x08\x00\x00\x00\x00\x00\x00\x00" + b"x" * 50, ("127.0.0.1", 4789))
    t = threading.Thread(target=send, daemon=True)
    t.start()
    yield
    stop.set()
    t.join()


def test_exec_over_ssh_streams_and_passes_the_exit_code(sshd):
    proc = driver(sshd, "exec", "sh", "-c", "echo out; echo err >&2; exit 7")
    out, err = proc.communicate(timeout=60)
    assert (proc.returncode, out, err) == (7, b"out\n", b"err\n")


def test_exec_over_ssh_forwards_stdin(sshd):
    proc = driver(sshd, "exec", "tr", "a-z", "A-Z", stdin=subprocess.PIPE)
    out, err = proc.communicate(b"through ssh\n", timeout=60)
    assert (proc.returncode, out) == (0, b"THROUGH SSH\n"), err


def test_exec_over_ssh_in_a_namespace_is_ip_netns_exec(sshd):
    """--ns wraps the command in `ip netns exec NS` on the node (no namespace A1 here)."""
    proc = driver(sshd, "exec", "--ns", "A1", "true")
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode != 0 and b"A1" in err


def test_capture_over_ssh_counts_and_decodes(sshd, vxlan_traffic):
    proc = driver(sshd, "capture", "3")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert len(packets(out.decode())) == 3, out
    assert out.count(b"127.0.0.1.4789: VXLAN") == 3, out
    assert b"note: udp port 4789 on lo" in err and b"3 packets captured" in err


def test_capture_over_ssh_writes_pcap(sshd, vxlan_traffic, tmp_path):
    pcap = tmp_path / "over-ssh.pcap"
    proc = driver(sshd, "capture", "4", str(pcap))
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    read = subprocess.run(["tcpdump", "-nn", "-r", str(pcap)], capture_output=True, text=True)
    assert read.returncode == 0 and len(packets(read.stdout)) == 4, read.stderr
    assert out.count(b"127.0.0.1.4789: VXLAN") == 4     # decoded here as they were saved


def remote_tcpdumps() -> list[str]:
    found = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                cmd = open(f"/proc/{d}/cmdline", "rb").read().split(b"\0")
                state = open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                continue
            if state != "Z" and cmd[:1] == [b"tcpdump"] and b"lo" in cmd and b"4789" in cmd:
                found.append(d)
    return found


def test_capture_over_ssh_stops_on_ctrl_c(sshd, vxlan_traffic, tmp_path):
    """No count: Ctrl-C (SIGINT to labgen) closes stdin on the channel, the node's tcpdump
    stops cleanly (counts printed, pcap whole), exit 0, and no tcpdump is left on the node."""
    assert remote_tcpdumps() == []
    pcap = tmp_path / "ctrl-c.pcap"
    proc = driver(sshd, "capture", "0", str(pcap))
    err = b""
    deadline = time.monotonic() + 30
    try:
        while b"listening on" not in err:
            assert time.monotonic() < deadline and proc.poll() is None, err
            if select.select([proc.stderr], [], [], 0.2)[0]:
                err += os.read(proc.stderr.fileno(), 4096)
        proc.send_signal(signal.SIGINT)
        out, rest = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    err += rest
    assert proc.returncode == 0, err
    assert b"Traceback" not in err and re.search(rb"\d+ packets? captured", err), err
    assert subprocess.run(["tcpdump", "-r", str(pcap)], capture_output=True).returncode == 0
    deadline = time.monotonic() + 10
    while remote_tcpdumps() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert remote_tcpdumps() == []
