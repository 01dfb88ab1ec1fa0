"""Per-node diagnostics kept in the lab dir when a verification failed, and the findings
read from them that a user should see at once (a firewall that does not admit the tunnel)."""
from __future__ import annotations

import shlex
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from labgen.lab.model import Lab, Node
from labgen.nodes.runner import Runner, RunnerError
from labgen.verify.batch import ns_exec


def firewall_probe(lab: Lab) -> str:
    """First line: "firewalld admits|blocks", "iptables admits|blocks" or "none", judged by
    the node script's own rule for this tunnel; then the firewall's whole configuration."""
    rule = shlex.quote(lab.kind.firewalld_rule(lab.underlay))
    match = lab.kind.iptables_match(lab.underlay)
    return "\n".join([
        "if command -v firewall-cmd >/dev/null 2>&1 && firewall-cmd --state >/dev/null 2>&1; then",
        f"  if firewall-cmd --query-rich-rule={rule} >/dev/null 2>&1; then echo 'firewalld admits'; "
        "else echo 'firewalld blocks'; fi",
        "  firewall-cmd --list-all",
        'elif command -v iptables >/dev/null 2>&1 && rules=$(iptables -S INPUT 2>/dev/null) && '
        '[ -n "$rules" ] && [ "$rules" != "-P INPUT ACCEPT" ]; then',
        f"  if iptables -C INPUT {match} -j ACCEPT 2>/dev/null; then echo 'iptables admits'; "
        "else echo 'iptables blocks'; fi",
        '  echo "$rules"',
        "else echo none; fi",
    ])


def firewall_finding(lab: Lab, node: str, output: str) -> str | None:
    """A line for the user when the node's active firewall lacks the tunnel's rule."""
    first = output.splitlines()[0].strip() if output.strip() else ""
    if first not in ("firewalld blocks", "iptables blocks"):
        return None
    which = first.split()[0]
    where = "its active zone" if which == "firewalld" else "its INPUT chain (not wide open)"
    return (f"{node}: {which} has no rule in {where} admitting {lab.kind.label} from "
            f"{lab.underlay}: run labgen up to add it (never switch the firewall off)")


def diagnostics_commands(lab: Lab, node: Node) -> list[str]:
    show = lab.mode.show
    # The userspace datapath reads the NIC before netfilter: no firewall can stop its tunnel.
    cmds = [firewall_probe(lab)] if lab.datapath == "system" else []
    cmds += ["ovs-vsctl --timeout=5 show", *(f"ovs-appctl {show} {b}" for b in lab.bridges),
            "ip -br link", "ip -br addr", "ip route"]
    for ns in node.namespaces:
        cmds += [ns_exec(ns.name, "ip -br addr"), ns_exec(ns.name, "ip neigh")]
    cmds.append("tail -n 40 /var/log/openvswitch/ovs-vswitchd.log")
    return cmds


def collect_diagnostics(lab: Lab, runners: Mapping[str, Runner], directory: Path) -> list[str]:
    """Write one file per node; return the findings (one line each) for the user."""
    directory.mkdir(parents=True, exist_ok=True)
    probe = firewall_probe(lab)

    def bound(runner: Runner, cmd: str) -> float:
        # firewall-cmd is a Python program talking to firewalld over D-Bus: three of them took
        # over 10 s on an emulated guest under load. Bounds, not waits; stretched like the
        # checks' on slow runners.
        return (30.0 if cmd == probe else 10.0) * float(getattr(runner, "timeout_scale", 1.0))

    def one(node: Node) -> str | None:
        path = directory / f"{node.name}.txt"
        parts, finding = [], None
        for cmd in diagnostics_commands(lab, node):
            try:
                res = runners[node.name].run(cmd, timeout=bound(runners[node.name], cmd))
                body = res.output or "(no output)"
                if not res.ok:
                    body += f"\n(exit {res.exit_code})"
                if cmd == probe:
                    finding = firewall_finding(lab, node.name, res.stdout)
            except RunnerError as exc:
                body = f"(node unreachable: {exc})"
            parts.append(f"$ {cmd}\n{body}\n")
        path.write_text("\n".join(parts))
        return finding

    with ThreadPoolExecutor(max_workers=len(lab.nodes)) as pool:
        return [f for f in pool.map(one, lab.nodes) if f]
