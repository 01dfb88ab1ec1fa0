"""A node made of recordings: a Runner that answers every command labgen's verification
sends (batched or not) with an output recorded on a real netns lab (tests/data/outputs: GRE,
RSTP, two nodes, OVS 3.1). node1's recordings serve node2 with its own names and addresses.
A Fault swaps one answer for another recording (a ping with 100% loss), so a test can see the
stage that names it fail. Nothing runs: no shell, no namespace, no Open vSwitch."""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from functools import partial

from labgen.lab.model import Lab
from labgen.nodes.process import NodeProcess
from labgen.nodes.runner import Result
from labgen.verify import checks
from labgen.verify.batch import MARK
from labgen.verify.spantree import STATE_COMMAND
from support import OUTPUTS

WORKDIR = "/tmp/labgen-capture.toy"


@dataclass(frozen=True)
class Fault:
    """On `node`, in namespace `netns` (None: the node itself), a command containing `text`
    answers with recording `output` and exit code `rc`."""
    node: str
    netns: str | None
    text: str
    output: str
    rc: int = 1


def _read(name: str) -> str:
    return (OUTPUTS / name).read_text()


class Replay:
    timeout_scale = 1.0

    def __init__(self, lab: Lab, node: str, faults: tuple[Fault, ...] = ()) -> None:
        self.lab, self.node, self.faults = lab, node, faults
        self.commands: list[tuple[str | None, str]] = []    # what was asked, for the test

    # ---- the Runner protocol -----------------------------------------------------------------
    def run(self, command: str, timeout: float = 30.0) -> Result:
        jobs = _batch_jobs(command)
        if jobs is None:
            ns, inner = _ns_of(command)
            rc, out = self.answer(ns, inner)
            return Result(command, rc, out, "")
        lines: list[str] = []
        for i, (ns, cmd) in sorted(jobs.items()):
            rc, text = self.answer(ns, cmd)
            lines.append(f"{MARK} {i} {rc} 1")
            lines.extend(text.splitlines())
        return Result(command, 0, "\n".join(lines) + "\n", "")

    def start(self, command: str) -> NodeProcess:
        raise NotImplementedError("the toy's nodes only answer verification")

    def close(self) -> None:
        pass

    # ---- the recordings ------------------------------------------------------------------------
    def answer(self, ns: str | None, cmd: str) -> tuple[int, str]:
        self.commands.append((ns, cmd))
        for f in self.faults:
            if f.node == self.node and f.netns == ns and f.text in cmd:
                return f.rc, _read(f.output)
        return self._recorded(ns, cmd)

    def _recorded(self, ns: str | None, cmd: str) -> tuple[int, str]:
        if cmd == checks.OVS_DAEMONS:
            return 0, _read("ovs-daemons.txt")
        if cmd.startswith("nic=$("):
            return 0, self._mine("underlay-nic.txt" if "addr show" in cmd else "underlay-mtu-netdev.txt")
        if cmd == checks.BRIDGE_PORTS:
            return 0, self._mine("bridge-ports-node1.json")
        if cmd.startswith("ip -o link show type veth"):
            return 0, self._mine("veth-pairs-node1.txt")
        if cmd.endswith("--columns=name,type,options,ofport list interface"):
            return 0, self._mine("interfaces-gre.json")
        if cmd.startswith("ip -o link && "):
            return 0, self._mine("mtu-inventory-node1.txt")
        if cmd == STATE_COMMAND:
            return 0, _read(f"rstp-{self.node}.json")       # recorded on both nodes
        if ns is not None and cmd.startswith("ip -o link show dev "):
            iface = next(x for x in self.lab.node(self.node).namespaces if x.name == ns)
            return 0, _read("ns-iface.txt").replace("a1.2", iface.interface) \
                .replace("192.168.10.1/", f"{iface.address}/")
        if cmd.startswith("ping -n -c 1 -W 0.2 -M do"):
            return 1, _read("ping-refused-local.txt")
        if cmd.startswith("ping "):
            return 0, _read("ping-reply.txt").replace("192.168.10.10", cmd.split()[-1])
        if "tcpdump" in cmd and "labgen-capture" in cmd:
            return 0, WORKDIR + "\n"
        if cmd.startswith(f"until [ -e {WORKDIR}/rc ]"):
            text = _read("capture-gre.txt")     # node1 -> node2; node2 -> node1 swaps the ends
            return 0, text if self.node == "node2" else _swap(text, ("10.10.10.1", "10.10.10.2"),
                                                                  ("192.168.10.1", "192.168.10.10"))
        return 127, f"bash: no recording for: {cmd}"

    def _mine(self, name: str) -> str:
        """node1's recording `name` as node2 would print it: its veths, namespaces, address, tunnel."""
        text = _read(name)
        if self.node == "node1":
            return text
        return _swap(text, ("a1.", "a2."), ("b1.", "b2."), ("A1", "A2"), ("B1", "B2"),
                     ("10.10.10.1/", "10.10.10.2/"), ("gre-node2", "gre-node1"),
                     ('"10.10.10.2"', '"10.10.10.1"'))


def _swap(text: str, *pairs: tuple[str, str]) -> str:
    """Exchange each pair's two words wherever they stand (a whole address, not a prefix)."""
    for a, b in pairs:
        pat = re.compile("|".join(re.escape(w) + (r"(?![0-9])" if w[-1].isdigit() else "") for w in (a, b)))
        text = pat.sub(partial(_other, a, b), text)
    return text


def _other(a: str, b: str, m: re.Match[str]) -> str:
    return b if m.group(0) == a else a


def _ns_of(command: str) -> tuple[str | None, str]:
    m = re.match(r"ip netns exec (\S+) (.*)", command, re.S)
    return (m.group(1), m.group(2)) if m else (None, command)


_JOB = re.compile(r'\{ s=\$EPOCHREALTIME; \( (.*?)\n\) >"\$d/(\d+)" 2>&1;', re.S)
_NS_GROUP = re.compile(r"""ip netns exec (\S+) bash -c ('(?:[^']|'"'"')*') _ "\$d" &""", re.S)


def _batch_jobs(command: str) -> dict[int, tuple[str | None, str]] | None:
    """{index: (namespace, command)} of a labgen.verify.batch script; None when it is not one."""
    if not command.startswith("bash -c ") or MARK not in command:
        return None
    script = shlex.split(command)[2]
    jobs: dict[int, tuple[str | None, str]] = {}
    for m in _NS_GROUP.finditer(script):
        for j in _JOB.finditer(shlex.split(m.group(2))[0]):
            jobs[int(j.group(2))] = (m.group(1), j.group(1))
    for j in _JOB.finditer(_NS_GROUP.sub("", script)):
        jobs[int(j.group(2))] = (None, j.group(1))
    return jobs
