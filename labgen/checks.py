"""The checks of each verification stage, planned from the Lab: what to run on which node
and how to judge its output. Nothing here runs a command except the tunnel capture, which
must coordinate two nodes at once."""
from __future__ import annotations

import re
import shlex
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Mapping

from .batch import Planned
from .model import Lab, Node
from .results import Check, excerpt
from .runner import Result, Runner, RunnerError


def _ns_exec(ns: str, cmd: str) -> str:
    return f"ip netns exec {ns} {cmd}"


def _ping(count_wait: float, addr: str, extra: str = "") -> str:
    # -c 1 -w T: return at the first reply, retrying every 0.2 s until T (ARP, MAC learning).
    return f"ping -n -q -c 1 -i 0.2 -w {count_wait:g} {extra}{addr}".replace("  ", " ")


_RTT = re.compile(r"= [\d.]+/([\d.]+)/")


def _ping_judge(res: Result) -> tuple[bool, str]:
    """Passed pings read 'reply in 1.2 ms'; failed ones keep ping's own words."""
    if res.ok:
        m = _RTT.search(res.stdout)
        return True, f"reply in {m.group(1)} ms" if m else excerpt(res.output)
    return False, excerpt(res.output) or f"exit {res.exit_code}"


def plan_nodes(lab: Lab) -> list[Planned]:
    return [Planned("nodes", "Open vSwitch answers", n.name,
                    "ovs-vsctl --timeout=5 get Open_vSwitch . ovs_version", timeout=15)
            for n in lab.nodes]


UNDERLAY_NIC = "ovs-vsctl --timeout=5 get Open_vSwitch . external_ids:labgen-underlay-nic | tr -d '\"'"


def plan_config(lab: Lab) -> list[Planned]:
    out = []
    for n in lab.nodes:
        cidr = f"{n.underlay_ip}/{lab.underlay_prefixlen}"
        cmd = (f"nic=$({UNDERLAY_NIC}) && ip -o link show dev \"$nic\" && "
               f"ip -o -4 addr show | grep -F ' {cidr} '")

        def judge_nic(res: Result, cidr=cidr) -> tuple[bool, str]:
            link = res.stdout.splitlines()[0] if res.stdout else ""
            up = bool(re.search(r"<[^>]*\bUP\b[^>]*>", link)) and "LOWER_UP" in link
            return res.ok and up, excerpt(res.output) or f"no interface holds {cidr}"
        out.append(Planned("config", "underlay interface up with its address", n.name, cmd,
                           judge=judge_nic))

        want = {t.port: (t.type, t.remote_ip) for t in n.tunnels}
        cmd = "; ".join(
            f"echo {t.port} $(ovs-vsctl --timeout=5 get interface {t.port} type options:remote_ip ofport"
            f" 2>&1 | tr '\\n' ' ')" for t in n.tunnels)

        def judge_tunnels(res: Result, want=want) -> tuple[bool, str]:
            bad = []
            for line in res.stdout.splitlines():
                port, _, rest = line.partition(" ")
                if port not in want:
                    continue
                kind, remote = want[port]
                fields_ = rest.replace('"', "").split()
                if len(fields_) < 3 or fields_[0] != kind or fields_[1] != remote or fields_[2] == "-1":
                    bad.append(f"{port}: expected {kind} to {remote}, found {rest.strip() or 'nothing'}")
            return (not bad and res.ok), "\n".join(bad) or excerpt(res.output)
        out.append(Planned("config", f"{lab.tunnel} tunnel ports on {lab.tunnel_bridge}", n.name, cmd,
                           judge=judge_tunnels))

        for ns in n.namespaces:
            cidr_ns = f"{ns.address}/{lab.overlay_prefixlen}"
            cmd = _ns_exec(ns.name, f"ip -o -4 addr show dev {ns.interface}")

            def judge_addr(res: Result, cidr_ns=cidr_ns) -> tuple[bool, str]:
                have = f" {cidr_ns} " in res.stdout
                return res.ok and have, excerpt(res.output) if have else \
                    f"{cidr_ns} missing: {excerpt(res.output) or 'no address'}"
            out.append(Planned("config", f"{ns.name} has {cidr_ns}", n.name, cmd, judge=judge_addr))
    return out


def plan_underlay(lab: Lab) -> list[Planned]:
    return [Planned("underlay", f"ping {m.name} underlay {m.underlay_ip}", n.name,
                    _ping(5, m.underlay_ip), timeout=10, judge=_ping_judge)
            for n in lab.nodes for m in lab.nodes if m is not n]


_PORT_LINE = re.compile(r"^\s+(\S+)\s+(root|designated|alternate|backup|disabled|master)\s+(\S+)", re.I)


def stp_converged(show_output: str) -> tuple[bool, list[str]]:
    """Converged: no port listening/learning, and every root/designated port forwarding."""
    ports, ok = [], True
    for line in show_output.splitlines():
        m = _PORT_LINE.match(line)
        if not m:
            continue
        port, role, state = m.group(1), m.group(2).lower(), m.group(3).lower()
        ports.append(f"{port} {role} {state}")
        if state in ("listening", "learning") or (role in ("root", "designated") and state != "forwarding"):
            ok = False
    return ok and bool(ports), ports


_ROOT = re.compile(r"Root ID:\s*\n\s*stp-priority\s+(\d+)\s*\n\s*stp-system-id\s+(\S+)")


def root_ids(show_output: str) -> set[str]:
    """The root bridge IDs ('priority.system-id') that the bridges in `show_output` follow."""
    return {f"{prio}.{sysid}" for prio, sysid in _ROOT.findall(show_output)}


def run_stp_checks(lab: Lab, runners: Mapping[str, Runner], timeout: float,
                   interval: float = 0.3) -> list[Check]:
    """Poll every node until spanning tree has settled everywhere: no port listening or
    learning, and every bridge of every node follows the SAME root. Local calm alone is not
    enough: two nodes can each settle on their own root before their BPDUs meet over the
    tunnel, and the merge that follows blocks and re-learns ports (30 s with standard timers).
    The settled state must hold on two polls in a row."""
    show = "rstp/show" if lab.stp == "rstp" else "stp/show"
    cmd = " ; ".join(f"ovs-appctl {show} {b}" for b in lab.bridges) + " 2>&1"
    name = f"{lab.stp.upper()} converged on {', '.join(lab.bridges)}, one root for all nodes"
    started = time.monotonic()
    deadline = started + timeout
    calm_before = False
    while True:
        with ThreadPoolExecutor(max_workers=len(lab.nodes)) as pool:
            polled = dict(zip(runners, pool.map(lambda n: _poll(runners[n], cmd), runners)))
        local = {n: stp_converged(out) if err is None else (False, []) for n, (out, err) in polled.items()}
        roots = {n: root_ids(out) for n, (out, _) in polled.items()}
        common = set.union(*roots.values()) if roots else set()
        calm = all(ok for ok, _ in local.values()) and len(common) == 1
        if (calm and calm_before) or time.monotonic() >= deadline:
            break
        calm_before = calm
        time.sleep(interval)

    checks = []
    for node in (n.name for n in lab.nodes):
        out, err = polled[node]
        ok, ports = local[node]
        if err is not None:
            passed, evidence = False, err
        elif calm:
            settled = [p for p in ports if "forwarding" not in p]
            passed, evidence = True, (f"root {next(iter(common))}; {len(ports)} ports, "
                                      f"{', '.join(settled) or 'all forwarding'}")
        elif not ports:
            passed, evidence = False, excerpt(out) or "no spanning tree output"
        elif not ok:
            waiting = [p for p in ports if p.split()[2] in ("listening", "learning", "discarding")]
            passed, evidence = False, f"not converged after {timeout:g} s: {', '.join(waiting or ports)}"
        else:
            others = {n: sorted(r) for n, r in roots.items() if r != roots[node]}
            passed = False
            evidence = (f"settled here on root {', '.join(sorted(roots[node]))}, but other nodes follow "
                        f"{others}: the trees have not merged over the tunnel after {timeout:g} s")
        checks.append(Check("stp", name, node, cmd, passed, evidence, time.monotonic() - started))
    return checks


def _poll(runner: Runner, cmd: str) -> tuple[str, str | None]:
    try:
        res = runner.run(cmd, timeout=15)
        return res.stdout, None
    except RunnerError as exc:
        return "", str(exc)


def plan_overlay(lab: Lab, wait: float) -> list[Planned]:
    out = []
    for n, src in lab.namespaces():
        for m, dst in lab.namespaces():
            if dst is src:
                continue
            where = "same node" if m is n else f"across to {m.name}"
            out.append(Planned("overlay", f"{src.name} -> {dst.name} {dst.address} ({where})", n.name,
                               _ns_exec(src.name, _ping(wait, dst.address)), timeout=wait + 10,
                               judge=_ping_judge))
    return out


def _pairs(lab: Lab) -> list[tuple[Node, Node]]:
    """(sender, receiver): every node receives once, from the node before it."""
    nodes = list(lab.nodes)
    return [(nodes[i - 1], nodes[i]) for i in range(len(nodes))]


def encap_filter(lab: Lab, src: str, dst: str) -> str:
    """A capture filter for encapsulated ICMP echo requests from overlay address `src` to
    `dst`. It matches the inner header, not the outer source: with three or more nodes the
    spanning tree may carry the ping through another node's tunnel."""
    enc = lab.encapsulation
    off = enc["inner_offset"]           # where the inner IPv4 header starts, past outer IP
    return (f"{enc['filter']} and ip[{off + 9}] = 1 and ip[{off + 20}] = 8 "
            f"and ip[{off + 12}:4] = {_hex(src)} and ip[{off + 16}:4] = {_hex(dst)}")


def _hex(addr: str) -> str:
    return "0x" + "".join(f"{int(o):02x}" for o in addr.split("."))


_TIMESTAMP = re.compile(r"^\d\d:\d\d:\d\d\.\d+ ")


def tcpdump_packets(text: str) -> list[str]:
    """One string per captured packet, without its timestamp: tcpdump prints VXLAN's inner
    packet on a line of its own."""
    packets: list[str] = []
    for line in text.splitlines():
        if _TIMESTAMP.match(line):
            packets.append(_TIMESTAMP.sub("", line))
        elif packets and line.strip():
            packets[-1] += " | " + line.strip()
    return packets


def run_tunnel_checks(lab: Lab, runners: Mapping[str, Runner]) -> list[Check]:
    """Capture on the receiving node's underlay NIC while the sender's namespace pings."""
    checks = []

    def one(pair: tuple[Node, Node]) -> Check:
        sender, receiver = pair
        src, dst = sender.namespaces[0], receiver.namespaces[0]
        capture = (f"nic=$({UNDERLAY_NIC}) && timeout 8 tcpdump -l -nn -Q in -c 2 -i \"$nic\" "
                   f"{shlex.quote(encap_filter(lab, src.address, dst.address))}")
        ping = _ns_exec(src.name, f"ping -n -q -c 6 -i 0.2 -w 3 {dst.address}")
        started = time.monotonic()
        box: dict[str, Result | Exception] = {}

        def cap() -> None:
            try:
                box["cap"] = runners[receiver.name].run(capture, timeout=15)
            except RunnerError as exc:
                box["cap"] = exc
        t = threading.Thread(target=cap)
        t.start()
        time.sleep(0.2)     # let tcpdump open its socket; the pings keep coming for 1.2 s anyway
        try:
            runners[sender.name].run(ping, timeout=10)
        except RunnerError:
            pass
        t.join()
        res = box["cap"]
        name = f"{lab.encapsulation['label']} carrying {src.name} -> {dst.name} seen on {receiver.name}"
        if isinstance(res, Exception):
            return Check("tunnel", name, receiver.name, capture, False, str(res), time.monotonic() - started)
        lines = [p for p in tcpdump_packets(res.stdout) if "ICMP echo request" in p]
        want = lab.encapsulation["marker"]
        passed = bool(lines) and all(want in ln for ln in lines)
        evidence = excerpt("\n".join(lines)) if lines else \
            f"no encapsulated echo request captured: {excerpt(res.output) or 'nothing'}"
        if lines and not passed:
            evidence = f"expected '{want}' in the capture: {evidence}"
        return Check("tunnel", name, receiver.name, capture, passed, evidence, time.monotonic() - started)

    with ThreadPoolExecutor(max_workers=len(lab.nodes)) as pool:
        checks = list(pool.map(one, _pairs(lab)))
    return checks


def plan_mtu(lab: Lab) -> list[Planned]:
    """The largest don't-fragment ping crosses the tunnel, and one byte more is refused:
    so the inner MTU is exactly the computed one (not rescued by fragmentation)."""
    size = lab.max_ping_payload
    out = []
    for sender, receiver in _pairs(lab):
        src, dst = sender.namespaces[0], receiver.namespaces[0]
        out.append(Planned("mtu", f"{src.name} -> {dst.name}: DF ping, {size} B payload crosses",
                           sender.name, _ns_exec(src.name, _ping(4, dst.address, f"-M do -s {size} ")),
                           timeout=15, judge=_ping_judge))
        over = _ns_exec(src.name, f"ping -n -q -c 1 -W 0.5 -M do -s {size + 1} {dst.address}")

        def judge_refused(res: Result) -> tuple[bool, str]:
            if res.ok:
                return False, f"a {size + 1} B DF ping got through: the inner MTU is larger than {lab.inner_mtu}"
            return True, f"refused (inner MTU {lab.inner_mtu})"
        out.append(Planned("mtu", f"{src.name} -> {dst.name}: DF ping, {size + 1} B payload refused",
                           sender.name, over, timeout=10, judge=judge_refused))
    return out
