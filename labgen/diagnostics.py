"""Per-node diagnostics kept in the lab dir when a verification failed."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Mapping

from .checks import ns_exec
from .model import Lab, Node
from .runner import Runner, RunnerError


def diagnostics_commands(lab: Lab, node: Node) -> list[str]:
    show = "rstp/show" if lab.stp == "rstp" else "stp/show"
    cmds = ["ovs-vsctl --timeout=5 show", *(f"ovs-appctl {show} {b}" for b in lab.bridges),
            "ip -br link", "ip -br addr", "ip route"]
    for ns in node.namespaces:
        cmds += [ns_exec(ns.name, "ip -br addr"), ns_exec(ns.name, "ip neigh")]
    cmds.append("tail -n 40 /var/log/openvswitch/ovs-vswitchd.log")
    return cmds


def collect_diagnostics(lab: Lab, runners: Mapping[str, Runner], directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)

    def one(node: Node) -> Path:
        path = directory / f"{node.name}.txt"
        parts = []
        for cmd in diagnostics_commands(lab, node):
            try:
                res = runners[node.name].run(cmd, timeout=10)
                body = res.output or "(no output)"
                if not res.ok:
                    body += f"\n(exit {res.exit_code})"
            except RunnerError as exc:
                body = f"(node unreachable: {exc})"
            parts.append(f"$ {cmd}\n{body}\n")
        path.write_text("\n".join(parts))
        return path

    with ThreadPoolExecutor(max_workers=len(lab.nodes)) as pool:
        return list(pool.map(one, lab.nodes))
