"""Judges of the config stage: the veth pairs, tunnel ports and bridge ports a node has,
against what the model puts there (the same contract as judges.py: positive evidence only)."""
from __future__ import annotations

import re

from labgen.nodes.runner import Result
from labgen.verify import ovsdb
from labgen.verify.judges import Verdict, command_failure, named_in, one_line, sections, why_not

# ---- veth pairs -------------------------------------------------------------------------
# `ip -o link` of a veth end: "7: b12.2@b12.1: <...>" (its peer in the same namespace, by
# name) or "4: a1.1@if3: <...> ... link-netns A1" (its peer's index in another namespace).
_PEERED = re.compile(r"^(\d+):\s+([^:@\s]+)@([^:\s]+):\s+<")
_LINK_NETNS = re.compile(r"\blink-netns (\S+)")


def veth_ends(text: str) -> dict[str, tuple[int, str, str | None]]:
    """`ip -o link` -> {name: (index, peer, peer's namespace as ip names it, or None)} for
    every link with a peer; the peer is a name, or "ifN" in another namespace."""
    out = {}
    for ln in text.splitlines():
        m = _PEERED.match(ln)
        if m:
            ns = _LINK_NETNS.search(ln)
            out[m.group(2)] = (int(m.group(1)), m.group(3), ns.group(1) if ns else None)
    return out


def veth_pairs(res: Result, pairs: list[tuple[str, str, str | None]]) -> Verdict:
    """`ip -o link show type veth` of the node, then of each namespace in its `@@ns NAME`
    section -> for each (end a, end b, namespace of b or None: on the node) both ends exist
    and each is the other's peer: a pair re-made with another partner, or half of one, is
    named."""
    parts = {ns: veth_ends(text) for ns, text in sections(res.stdout).items()}
    node = parts.get("", {})
    missing: list[str] = []
    wrong: list[str] = []
    for a, b, ns in pairs:
        here = parts.get(ns or "", {})
        if a not in node or b not in here:
            missing.extend(named_in(x, w) for x, w, have in ((a, "", node), (b, ns or "", here)) if x not in have)
            continue
        (ia, peer_a, ns_a), (ib, peer_b, _) = node[a], here[b]
        if ns is None:
            ok = peer_a == b and peer_b == a
            found = f"{a} paired with {peer_a}, {b} with {peer_b}"
        else:
            ok = peer_a == f"if{ib}" and peer_b == f"if{ia}" and ns_a in (None, ns)
            found = f"{a} (if{ia}) paired with {peer_a} in {ns_a or 'another namespace'}, {b} in {ns} (if{ib}) with {peer_b}"
        if not ok:
            wrong.append(f"expected {a} <-> {named_in(b, ns or '')}, found {found}")
    failed = command_failure(res)
    if missing or wrong or failed:
        out = wrong + ([f"missing: {', '.join(missing)}"] if missing else []) + \
            ([f"the listing failed: {failed}"] if failed else [])
        return False, "; ".join(out)
    return True, f"{len(pairs)} veth pairs, each end paired with its own other end"


# ---- tunnel ports -----------------------------------------------------------------------
def _vsctl_failed(res: Result) -> str | None:
    """What a failed `ovs-vsctl -f json` said besides its JSON documents; None on exit 0."""
    if res.ok:
        return None
    said = [ln for ln in res.output.splitlines() if ln.strip() and not ln.lstrip().startswith("{")]
    return f"ovs-vsctl failed: {why_not(Result(res.command, res.exit_code, chr(10).join(said), ''))}"


def tunnel_ports(res: Result, want: dict[str, tuple[str, str, str | None]],
                 tunnel_types: tuple[str, ...] = ()) -> Verdict:
    """`ovs-vsctl -f json list interface` rows -> each wanted port with its type, remote and
    key (GRE key / VXLAN VNI; None = no key or 0) and a real OpenFlow port number, and no
    other interface of a tunnel type (a lab provisioned before as another kind keeps none)."""
    failed = _vsctl_failed(res)
    if failed:
        return False, failed
    text = res.stdout
    try:
        rows = {r["name"]: r for r in ovsdb.rows(ovsdb.documents(text, 1)[0])}
    except (ValueError, KeyError, TypeError):
        return False, f"no interface list from OVS: {one_line(text) or 'no output'}"
    bad, good = [], []
    for port, (kind, remote, key) in want.items():
        row = rows.get(port)
        if row is None:
            bad.append(f"{port}: expected {kind} to {remote}, found no such port")
            continue
        opts = row["options"] if isinstance(row["options"], dict) else {}
        found_key = opts.get("key")
        found_key = None if found_key in (None, "0") else found_key
        want_key = None if key in (None, "0") else key
        ofport = row["ofport"] if isinstance(row["ofport"], int) else -1
        if row["type"] != kind or opts.get("remote_ip") != remote or found_key != want_key or ofport < 1:
            bad.append(f"{port}: expected {kind} to {remote} key {want_key or 'none'}, found "
                       f"{row['type'] or 'system'} to {opts.get('remote_ip', 'nothing')} key "
                       f"{found_key or 'none'}, ofport {ofport}")
        else:
            good.append(f"{port} {kind} to {remote}" + (f" key {want_key}" if want_key else ""))
    for name, row in sorted(rows.items()):
        if name not in want and row["type"] in tunnel_types:
            opts = row["options"] if isinstance(row["options"], dict) else {}
            bad.append(f"{name}: a {row['type']} port to {opts.get('remote_ip', 'nothing')} "
                       "that the model does not have")
    if bad:
        return False, "; ".join(bad)
    return True, ", ".join(good)


# ---- bridge ports -----------------------------------------------------------------------
def bridge_ports(res: Result, want: dict[str, list[str]]) -> Verdict:
    """checks.BRIDGE_PORTS (bridges, ports, interfaces from OVS's database) -> every port the
    model puts on each bridge is a port of that bridge, and ovs-vswitchd opened its interface
    (an OpenFlow port number, no error). A port missing, on another bridge or not opened is
    named with its bridge; so is a bridge that is not there."""
    failed = _vsctl_failed(res)
    if failed:
        return False, failed
    try:
        bridges_doc, ports_doc, ifaces_doc = ovsdb.documents(res.stdout, 3)
        bridges = {r["name"]: r for r in ovsdb.rows(bridges_doc)}
        ports = {r["_uuid"]: r for r in ovsdb.rows(ports_doc)}
        ifaces = {r["_uuid"]: r for r in ovsdb.rows(ifaces_doc)}
    except (ValueError, KeyError, TypeError):
        return False, f"no bridge list from OVS: {one_line(res.stdout) or 'no output'}"

    def as_list(v: object) -> list[object]:
        return v if isinstance(v, list) else [v]

    where = {ports[u]["name"]: name for name, br in bridges.items() for u in as_list(br["ports"]) if u in ports}
    missing, unopened, count = [], [], 0
    for bridge, names in want.items():
        if bridge not in bridges:
            missing.append(f"bridge {bridge} missing ({len(names)} ports: {', '.join(names)})")
            continue
        on_bridge = {ports[u]["name"]: ports[u] for u in as_list(bridges[bridge]["ports"]) if u in ports}
        for name in names:
            port = on_bridge.get(name)
            if port is None:
                elsewhere = f" (it is on {where[name]})" if name in where else ""
                missing.append(f"port {name} missing from {bridge}{elsewhere}")
                continue
            rows = [ifaces[u] for u in as_list(port["interfaces"]) if u in ifaces]
            bad = [r for r in rows if not (isinstance(r["ofport"], int) and r["ofport"] >= 1) or r["error"]]
            if not rows or bad:
                r = bad[0] if bad else None
                why = "no interface" if r is None else \
                    f"ofport {r['ofport'] if isinstance(r['ofport'], int) else 'none'}" + \
                    (f": {r['error']}" if r["error"] else "")
                unopened.append(f"{bridge} {name} not opened by OVS ({why})")
                continue
            count += 1
    if missing or unopened:
        return False, "; ".join(missing + unopened)
    return True, f"{count} ports of the model on {', '.join(want)}, each opened by OVS"
