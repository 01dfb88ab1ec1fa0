"""The checks of each verification stage, planned from the Lab: what to run on which node
and which judge reads its output (judges.py). Two stages run their own loop because they
watch several nodes at once: spanning tree (polled until it holds, spantree.py judges all
nodes together) and the tunnel proof (a capture on one node while another pings)."""
from __future__ import annotations

import shlex
import threading
import time
from collections.abc import Collection, Mapping
from concurrent.futures import ThreadPoolExecutor
from functools import partial

from labgen.lab import tunnels
from labgen.lab.model import Lab, Node
from labgen.nodes.runner import Result, Runner, RunnerError
from labgen.verify import config_judges, judges
from labgen.verify.batch import Planned, ns_exec
from labgen.verify.results import Check
from labgen.verify.spantree import (
    BridgeState,
    Link,
    bridge_problems,
    judge_tree,
    model_ports,
    parse_state,
    state_command,
)


def ping(wait: float, addr: str, extra: str = "") -> str:
    # -c 1 -w T: return at the first reply, retrying every 0.2 s until T (ARP, MAC learning).
    return " ".join(f"ping -n -q -c 1 -i 0.2 -w {wait:g} {extra} {addr}".split())


UNDERLAY_NIC = "ovs-vsctl --timeout=5 get Open_vSwitch . external_ids:labgen-underlay-nic | tr -d '\"'"


# ---- nodes ------------------------------------------------------------------------------
# Both daemons, each asked for itself: ovsdb-server for the version its database holds (the
# node's start script writes it there, and it stays after ovs-vswitchd dies), ovs-vswitchd on
# its own control socket. One section per daemon: its name, its exit code, what it said
# (judges.ovs_daemons); the check exits non-zero unless both answered.
OVS_DAEMONS = ('db=$(ovs-vsctl --timeout=5 get Open_vSwitch . ovs_version 2>&1); a=$?; '
               'sw=$(ovs-appctl --timeout=5 version 2>&1); b=$?; '
               'printf \'ovsdb-server %s %s\\novs-vswitchd %s %s\\n\' $a "$db" $b "$sw"; [ $a$b = 00 ]')


def plan_nodes(lab: Lab) -> list[Planned]:
    return [Planned("nodes", "Open vSwitch answers (ovsdb-server, ovs-vswitchd)", n.name,
                    OVS_DAEMONS, timeout=15, judge=judges.ovs_daemons)
            for n in lab.nodes]


# ---- config -----------------------------------------------------------------------------
# Every bridge with its ports, every port with its interfaces, every interface with its
# OpenFlow port number and error: one read of the database (config_judges.bridge_ports).
BRIDGE_PORTS = ("ovs-vsctl --timeout=5 -f json -- --columns=name,ports list bridge"
                " -- --columns=_uuid,name,interfaces list port"
                " -- --columns=_uuid,name,ofport,error list interface")


def veth_listing(node: Node) -> str:
    """Every veth of the node, then of each of its namespaces (`@@ns NAME` sections; `ip -n`
    enters the namespace itself: no `ip netns exec` process). Chained with &&: a namespace
    that cannot be read fails the check."""
    return " && ".join(["ip -o link show type veth",
                        *(f"echo '@@ns {ns.name}' && ip -n {ns.name} -o link show type veth"
                          for ns in node.namespaces)])


def plan_config(lab: Lab) -> list[Planned]:
    """What the node script made and nothing changes by itself: the underlay NIC and its
    address, every port of the model on its bridge, every veth pair, the tunnel ports'
    settings, the namespaces' interfaces. A fault here fails at once: no later stage waits
    for it (spanning tree would poll until its timeout for a port that is not there)."""
    out = []
    want_key = None if lab.key is None else str(lab.key)
    key_word = lab.kind.key_name
    for n in lab.nodes:
        cidr = f"{n.underlay_ip}/{lab.underlay_prefixlen}"
        out.append(Planned(
            "config", f"underlay NIC up, {cidr} assigned", n.name,
            f'nic=$({UNDERLAY_NIC}) && ip -o link show dev "$nic" && ip -o -4 addr show',
            judge=partial(judges.underlay_nic, cidr=cidr)))
        ports = model_ports(lab, n)
        out.append(Planned(
            "config", f"every port of the model on {', '.join(lab.bridges)}, opened by OVS", n.name,
            BRIDGE_PORTS, judge=partial(config_judges.bridge_ports, want=ports)))
        pairs = [(v.a, v.b, v.namespace) for v in n.veths]
        out.append(Planned(
            "config", f"veth pairs: all {len(pairs)}, each end paired with its own other end", n.name,
            veth_listing(n), judge=partial(config_judges.veth_pairs, pairs=pairs)))
        want = {t.port: (t.type, t.remote_ip, want_key) for t in n.tunnels}
        out.append(Planned(
            "config", f"{lab.tunnel} ports on {lab.tunnel_bridge}: type, remote, {key_word}; no other tunnel", n.name,
            "ovs-vsctl --timeout=5 -f json --columns=name,type,options,ofport list interface",
            judge=partial(config_judges.tunnel_ports, want=want,
                          tunnel_types=tuple(k.ovs_type for k in tunnels.KINDS.values()))))
        for ns in n.namespaces:
            ns_cidr = f"{ns.address}/{lab.overlay_prefixlen}"
            out.append(Planned(
                "config", f"{ns.name}: {ns.interface} up with {ns_cidr}", n.name,
                f"ip -o link show dev {ns.interface} && ip -o -4 addr show dev {ns.interface}",
                judge=partial(judges.interface_with_address, iface=ns.interface, cidr=ns_cidr),
                netns=ns.name))
    return out


# ---- underlay ---------------------------------------------------------------------------
def plan_underlay(lab: Lab) -> list[Planned]:
    return [Planned("underlay", f"ping {m.name} underlay {m.underlay_ip}", n.name,
                    ping(5, m.underlay_ip), timeout=10, judge=judges.ping_reply)
            for n in lab.nodes for m in lab.nodes if m is not n]


# ---- spanning tree ----------------------------------------------------------------------
def run_stp_checks(lab: Lab, runners: Mapping[str, Runner], timeout: float,
                   interval: float = 0.1) -> list[Check]:
    """The stp stage: poll_tree's checks."""
    return poll_tree(lab, runners, timeout, interval)[0]


def poll_tree(lab: Lab, runners: Mapping[str, Runner], timeout: float,
              interval: float = 0.1, cut: Collection[Link] = ()) -> tuple[list[Check], dict[str, dict[str, BridgeState]]]:
    """Poll every node until the lab's mode is on for every bridge, every port reports its
    state, no port is still moving (not even one whose link carries nothing) and the forwarding links
    of all nodes form one spanning tree; that must hold on two polls in a row. A bridge
    without loop protection or a node that does not answer will not heal by waiting: those
    fail at once. Returns the checks and the state last read (failover reads the tree from
    it: the same judgement the stp stage makes). `cut`: links failover has cut without taking
    their carrier (tunnels): judged absent (spantree.judge_tree)."""
    mode = lab.stp.upper()
    command = state_command(lab.stp)
    started = time.monotonic()
    deadline = started + timeout
    held = False
    while True:
        with ThreadPoolExecutor(max_workers=len(lab.nodes)) as pool:
            polled = dict(zip([n.name for n in lab.nodes],
                              pool.map(lambda n: _poll(runners[n.name], command), lab.nodes), strict=False))
        states: dict[str, dict[str, BridgeState]] = {}
        node_problems: dict[str, list[str]] = {}
        static = False
        for node, (text, err) in polled.items():
            if err is not None:
                node_problems[node], static = [err], True
                continue
            try:
                states[node] = parse_state(node, text, lab.stp, lab.bridges)
            except (ValueError, KeyError, TypeError, IndexError):
                node_problems[node] = [f"no bridge state from OVS: {judges.one_line(text) or 'no output'}"]
                continue
            node_problems[node] = bridge_problems(lab, states[node])
            static |= any("=false" in p or p.endswith(" missing") for p in node_problems[node])
        verdict = judge_tree(lab, states, cut) if len(states) == len(lab.nodes) else None
        calm = verdict is not None and verdict.ok and not any(node_problems.values())
        if (calm and held) or static or time.monotonic() >= deadline:
            break
        held = calm
        time.sleep(interval)     # a poll interval, not a wait for an assumed duration

    seconds = time.monotonic() - started
    checks = []
    for n in lab.nodes:
        problems = node_problems.get(n.name, [])
        evidence = "; ".join(problems) if problems else \
            f"{mode} on {', '.join(lab.bridges)}; {sum(len(b.ports) for b in states[n.name].values())} ports reporting"
        checks.append(Check("stp", f"{mode} on {', '.join(lab.bridges)}, every port reporting", n.name,
                            command, not problems, evidence, seconds,
                            error=bool(problems) and n.name not in states))
    name = f"forwarding links form one spanning tree of all {len(lab.nodes) * len(lab.bridges)} bridges"
    if verdict is None:
        checks.append(Check("stp", name, "all", command, False,
                            "not judged: the state of every node is needed", seconds))
    else:
        n_links = len(lab.nodes) * len(lab.bridges) - 1
        if verdict.ok:
            evidence = f"root {verdict.root}; {verdict.forwarding_links} links forward, the rest block"
        else:
            evidence = "; ".join(verdict.problems) or f"{verdict.forwarding_links} links forward, a tree needs {n_links}"
            if time.monotonic() >= deadline and not static:
                evidence = f"after {timeout:g} s: {evidence}"
        checks.append(Check("stp", name, "all", command, verdict.ok, evidence, seconds))
    return checks, states


def read_bridges(lab: Lab, runner: Runner, node: str, command: str | None = None) -> dict[str, BridgeState] | None:
    """One node's bridges as OVS reports them now (None: an answer that does not parse); for
    the readers outside the stp stage's poll (failover's waits, the tree drawn after verify).
    A node that cannot be reached raises RunnerError."""
    res = runner.run(command or state_command(lab.stp), timeout=15 * runner.timeout_scale)
    try:
        return parse_state(node, res.stdout, lab.stp, lab.bridges) if res.ok else None
    except (ValueError, KeyError, TypeError, IndexError):
        return None


def _poll(runner: Runner, cmd: str) -> tuple[str, str | None]:
    try:
        res = runner.run(cmd, timeout=15)
    except RunnerError as exc:
        return "", str(exc)
    return (res.stdout, None) if res.ok else ("", judges.one_line(res.output) or f"exit {res.exit_code}")


# ---- overlay ----------------------------------------------------------------------------
def plan_overlay(lab: Lab, wait: float) -> list[Planned]:
    out = []
    for n, src in lab.namespaces():
        for m, dst in lab.namespaces():
            if dst is src:
                continue
            where = "same node" if m is n else f"across to {m.name}"
            out.append(Planned("overlay", f"{src.name} -> {dst.name} {dst.address} ({where})", n.name,
                               ping(wait, dst.address), timeout=wait + 10,
                               judge=judges.ping_reply, netns=src.name))
    return out


# ---- tunnel -----------------------------------------------------------------------------
def pairs(lab: Lab) -> list[tuple[Node, Node]]:
    """(sender, receiver): every node receives once, from the node before it."""
    nodes = list(lab.nodes)
    return [(nodes[i - 1], nodes[i]) for i in range(len(nodes))]


def encap_filter(lab: Lab, src: str, dst: str) -> str:
    """A capture filter for encapsulated ICMP echo requests from overlay address `src` to
    `dst`. It matches the inner header, not the outer source: with three or more nodes the
    spanning tree may carry the ping through another node's tunnel."""
    off = lab.overhead                  # where the inner IPv4 header starts, past outer IP
    return (f"{lab.kind.arriving_filter} and ip[{off + 9}] = 1 and ip[{off + 20}] = 8 "
            f"and ip[{off + 12}:4] = {_hex(src)} and ip[{off + 16}:4] = {_hex(dst)}")


def _hex(addr: str) -> str:
    return "0x" + "".join(f"{int(o):02x}" for o in addr.split("."))


def capture_start(lab: Lab, src: str, dst: str, limit: float) -> str:
    """Start tcpdump in the background on the node's underlay NIC and return only once it is
    really listening: its own "listening on" line (printed once the socket and filter are
    in place), however long a slow or emulated node takes to get there. Prints the work dir.
    --immediate-mode: each packet is handed over as it arrives; by default libpcap holds
    them until its buffer block times out (a second), which the check would wait for.
    The end of the capture is the file rc, written when tcpdump has exited: an exited
    process can linger as a zombie until its new parent reaps it (here up to a second), so
    `kill -0` would say it still runs."""
    return "\n".join([
        "d=$(mktemp -d /tmp/labgen-capture.XXXXXX)",
        f"nic=$({UNDERLAY_NIC})",
        f'( setsid timeout {limit:g} tcpdump --immediate-mode -l -nn -Q in -c 2 -i "$nic" '
        f'{shlex.quote(encap_filter(lab, src, dst))} >"$d/out" 2>"$d/err" </dev/null; '
        'echo $? >"$d/rc" ) </dev/null >/dev/null 2>&1 &',
        'until grep -q "listening on" "$d/err" 2>/dev/null; do',
        '  if [ -e "$d/rc" ]; then cat "$d/err" >&2; rm -rf "$d"; exit 1; fi',
        "  sleep 0.05   # polling for tcpdump's line, not waiting an assumed time",
        "done",
        'echo "$d"',
    ])


def capture_collect(workdir: str) -> str:
    """Wait for the capture to end by itself (its packets, or its own timeout), print it and
    exit with tcpdump's exit code (124: its timeout ended it before it had both packets)."""
    d = shlex.quote(workdir)
    return (f"until [ -e {d}/rc ]; do sleep 0.05; done; "   # polling for the end, see capture_start
            f"cat {d}/out; cat {d}/err >&2; read -r rc <{d}/rc; rm -rf {d}; exit $rc")


def run_tunnel_checks(lab: Lab, runners: Mapping[str, Runner], limit: float) -> list[Check]:
    """Capture on the receiving node's underlay NIC while the sender's namespace pings. The
    pings start only once the capture listens; the sender keeps pinging, round after round,
    until the capture has its packets (or its own timeout, `limit` seconds: the provider's
    capture_wait, ends it)."""

    def one(pair: tuple[Node, Node]) -> Check:
        sender, receiver = pair
        src, dst = sender.namespaces[0], receiver.namespaces[0]
        rx, tx = runners[receiver.name], runners[sender.name]
        scale = getattr(rx, "timeout_scale", 1.0)
        name = f"{lab.kind.label} carrying {src.name} -> {dst.name} seen on {receiver.name}"
        start = capture_start(lab, src.address, dst.address, limit)
        # Two echo requests per round: what the capture waits for (root may send them 50 ms
        # apart; verification runs as root on every provider).
        probe = ns_exec(src.name, f"ping -n -q -c 2 -i 0.05 -w 3 {dst.address}")
        started = time.monotonic()
        try:
            ready = rx.run(start, timeout=30 * scale)
        except RunnerError as exc:
            return Check("tunnel", name, receiver.name, start, False, str(exc), 0.0, error=True)
        workdir = ready.stdout.strip().splitlines()[-1] if ready.ok and ready.stdout.strip() else ""
        if not workdir.startswith("/tmp/labgen-capture."):
            return Check("tunnel", name, receiver.name, start, False,
                         f"the capture did not start: {judges.one_line(ready.output) or f'exit {ready.exit_code}'}",
                         time.monotonic() - started, error=True)
        box: dict[str, Result | Exception] = {}
        done = threading.Event()

        def collect() -> None:
            try:
                box["cap"] = rx.run(capture_collect(workdir), timeout=(limit + 15) * scale)
            except RunnerError as exc:
                box["cap"] = exc
            finally:
                done.set()
        threading.Thread(target=collect, daemon=True).start()
        rounds = 0
        while not done.is_set():
            try:
                tx.run(probe, timeout=15 * scale)
            except RunnerError:
                break           # the sender is gone: the capture's own timeout ends the check
            rounds += 1
        done.wait()
        res = box["cap"]
        seconds = time.monotonic() - started
        if isinstance(res, Exception):
            return Check("tunnel", name, receiver.name, start, False, str(res), seconds, error=True)
        passed, evidence = judges.encapsulated_echo(res, lab.kind.marker(lab.key))
        if not passed:
            evidence = f"{evidence} ({rounds} ping rounds from {src.name})"
        return Check("tunnel", name, receiver.name, start, passed, evidence, seconds)

    with ThreadPoolExecutor(max_workers=len(lab.nodes)) as pool:
        return list(pool.map(one, pairs(lab)))


# ---- path MTU ---------------------------------------------------------------------------
def overlay_interfaces(lab: Lab, node: Node) -> dict[str, list[str]]:
    """Every interface an overlay frame can cross on `node`, by namespace ("" = the node):
    bridge ends of the veths, both ends of the loop veths, the bridges' internal ports, and
    the namespace ends."""
    on_node = list(lab.bridges)
    for v in node.veths:
        on_node.append(v.a)
        if v.bridge_b:
            on_node.append(v.b)
    out = {"": on_node}
    for ns in node.namespaces:
        out[ns.name] = [ns.interface]
    return out


def plan_mtu(lab: Lab) -> list[Planned]:
    """No frame can be black-holed: every overlay interface carries at most the inner MTU,
    the underlay carries the inner MTU plus the tunnel's overhead, a don't-fragment frame of
    exactly the inner MTU crosses the tunnel both ways, and one byte more is refused by the
    sender's own kernel (which names the MTU), not lost on the way."""
    out = []
    needed = lab.underlay_mtu
    for n in lab.nodes:
        wanted = overlay_interfaces(lab, n)
        cmd = " && ".join(["ip -o link", *(f"echo '@@ns {ns}' && " + ns_exec(ns, "ip -o link")
                                           for ns in wanted if ns)])
        out.append(Planned("mtu", f"no overlay interface above the inner MTU {lab.inner_mtu}", n.name, cmd,
                           judge=partial(judges.mtu_inventory, wanted=wanted, inner_mtu=lab.inner_mtu)))
        also = ("br-phy",) if lab.datapath == "netdev" else ()
        out.append(Planned("mtu", f"underlay carries {needed} B (inner MTU + tunnel overhead)", n.name,
                           " && ".join([f'nic=$({UNDERLAY_NIC})', 'ip -o link show dev "$nic"',
                                        *(f"ip -o link show dev {name}" for name in also)]),
                           judge=partial(judges.underlay_mtu, needed=needed, also=also)))
    size = lab.max_ping_payload
    for sender, receiver in pairs(lab):
        src, dst = sender.namespaces[0], receiver.namespaces[0]
        out.append(Planned("mtu", f"{src.name} -> {dst.name}: DF ping, {size} B payload crosses",
                           sender.name, ping(4, dst.address, f"-M do -s {size}"),
                           timeout=15, judge=judges.ping_reply, netns=src.name))
        # Not -q: quiet ping hides the kernel's "local error: message too long" line. Only
        # that line passes: ping's wait for a reply (-W) is for the evidence when it fails.
        over = f"ping -n -c 1 -W 0.2 -M do -s {size + 1} {dst.address}"
        out.append(Planned("mtu", f"{src.name} -> {dst.name}: DF ping, {size + 1} B payload refused",
                           sender.name, over, timeout=10,
                           judge=partial(judges.refused_locally, inner_mtu=lab.inner_mtu), netns=src.name))
    return out

