"""Judges: a command's real output -> (passed, one line of evidence).

A judge passes only on positive evidence for what its check claims (a reply with its round
trip, a version string, the kernel's own refusal). Anything else fails: an empty output, a
timeout, a missing namespace or binary. Pure functions, tested on recorded real outputs."""
from __future__ import annotations

import re

from labgen.nodes.runner import Result
from labgen.verify import ovsdb

Verdict = tuple[bool, str]

EVIDENCE_WIDTH = 160


def one_line(text: str, width: int = EVIDENCE_WIDTH) -> str:
    """The first non-empty lines of `text` joined into one short line."""
    kept = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    line = "; ".join(kept)
    return line if len(line) <= width else line[: width - 3] + "..."


def _why_not(res: Result) -> str:
    """What a failed command said, in one line; never empty."""
    if res.exit_code == 127:
        return f"command not found: {one_line(res.output)}"
    if res.exit_code == 124:
        return f"timed out: {one_line(res.output) or 'no output'}"
    return one_line(res.output) or f"exit {res.exit_code}, no output"


# ---- ping -------------------------------------------------------------------------------
_RTT = re.compile(r"= [\d.]+/([\d.]+)/")
_RECEIVED = re.compile(r"(\d+) packets transmitted, (\d+) received")


def ping_reply(res: Result) -> Verdict:
    """Passed only with a reply counted by ping and its round-trip time."""
    rec = _RECEIVED.search(res.stdout)
    rtt = _RTT.search(res.stdout)
    if res.ok and rec and int(rec.group(2)) > 0 and rtt:
        return True, f"reply in {rtt.group(1)} ms"
    errors = [ln.strip() for ln in res.output.splitlines()
              if ln.strip().startswith(("ping:", "Cannot", "From ", "sh:", "bash:"))]
    if errors:
        return False, one_line("\n".join(errors))
    if rec:
        loss = re.search(r"(\d+(?:\.\d+)?)% packet loss", res.stdout)
        return False, (f"no reply: {rec.group(1)} sent, {rec.group(2)} received"
                       + (f", {loss.group(1)}% loss" if loss else ""))
    return False, _why_not(res)


_TOO_LONG = re.compile(r"message too long, mtu=(\d+)", re.I)
# Newer iputils (Debian 13) get the refusal from sendmsg() itself and print no MTU.
_SENDMSG_TOO_LONG = re.compile(r"sendmsg: message too long", re.I)


def refused_locally(res: Result, inner_mtu: int) -> Verdict:
    """A don't-fragment ping one byte over the inner MTU must be refused by the sender's own
    kernel (iputils up to 2021 print the MTU it names, newer ones only sendmsg's error): silence (a frame dropped somewhere on the path) is the black
    hole this check exists to catch, not a refusal."""
    m = _TOO_LONG.search(res.output)
    if m and int(m.group(1)) == inner_mtu:
        return True, f"refused by the kernel: message too long, mtu={m.group(1)}"
    if m:
        return False, f"refused at mtu={m.group(1)}, expected mtu={inner_mtu}"
    if _SENDMSG_TOO_LONG.search(res.output):
        # The kernel's refusal without the number: the MTU itself is proven by the
        # inventory check (no overlay interface above the inner MTU) and the full-size ping.
        return True, "refused by the kernel: sendmsg: Message too long"
    if res.ok:
        return False, f"got through: the path carries more than the inner MTU {inner_mtu}"
    rec = _RECEIVED.search(res.stdout)
    if rec:
        return False, (f"no refusal from the kernel: {rec.group(1)} sent, {rec.group(2)} received "
                       f"(the frame was lost on the path: a black hole)")
    return False, f"no refusal from the kernel: {_why_not(res)}"


# ---- Open vSwitch -----------------------------------------------------------------------
_VERSION = re.compile(r'^"?(\d+\.\d+(?:\.\d+)?)"?$')
_VSWITCHD_VERSION = re.compile(r"^ovs-vswitchd \(Open vSwitch\) (\d+\.\d+(?:\.\d+)?)")
# checks.OVS_DAEMONS prints one section per daemon: "NAME EXIT first line", then its other lines.
_DAEMON = re.compile(r"^(ovsdb-server|ovs-vswitchd) (\d+) ?(.*)$")
DAEMONS = ("ovsdb-server", "ovs-vswitchd")


def _daemon_sections(text: str) -> dict[str, tuple[int, list[str]]]:
    """checks.OVS_DAEMONS' output -> {daemon: (exit code, its lines)}."""
    out: dict[str, tuple[int, list[str]]] = {}
    current: list[str] | None = None
    for ln in text.splitlines():
        m = _DAEMON.match(ln)
        if m and m.group(1) not in out:
            current = [m.group(3)] if m.group(3).strip() else []
            out[m.group(1)] = (int(m.group(2)), current)
        elif current is not None and ln.strip():
            current.append(ln)
    return out


def ovs_daemons(res: Result) -> Verdict:
    """Both daemons answer, each asked for itself: ovsdb-server with the version its database
    holds, ovs-vswitchd on its own control socket (ovs-appctl version). The version in the
    database is written when OVS starts: it stays there after ovs-vswitchd dies. A daemon that
    does not answer, or is missing from the output, is named."""
    sections = _daemon_sections(res.stdout)
    if not sections:
        return False, f"neither daemon asked: {_why_not(res)}"
    versions: dict[str, str] = {}
    wrong = []
    for daemon in DAEMONS:
        if daemon not in sections:
            wrong.append(f"{daemon}: no answer in the output")
            continue
        rc, lines = sections[daemon]
        pattern = _VERSION if daemon == "ovsdb-server" else _VSWITCHD_VERSION
        m = pattern.match(lines[0].strip()) if lines else None
        if rc == 0 and m:
            versions[daemon] = m.group(1)
            continue
        # What the client said: its own error line, not the log lines before it.
        said = [ln for ln in lines if ln.startswith(("ovs-vsctl:", "ovs-appctl:"))] or lines
        wrong.append(f"{daemon} does not answer: {one_line(chr(10).join(said)) or f'exit {rc}, no output'}")
    # Each daemon's own line whole (not cut to one evidence width): both are named.
    if wrong:
        return False, "; ".join(wrong)
    if not res.ok:
        return False, f"both daemons answered, but the check exited {res.exit_code}: {_why_not(res)}"
    return True, ", ".join(f"{d} {v}" for d, v in versions.items())


# ---- links ------------------------------------------------------------------------------
_LINK = re.compile(r"^\d+:\s+([^:@\s]+)(?:@\S+)?:\s+<([^>]*)>.*?\bmtu (\d+)", re.M)


def links(text: str) -> dict[str, tuple[set[str], int]]:
    """`ip -o link` -> {name: (flags, mtu)}."""
    return {m.group(1): (set(m.group(2).split(",")), int(m.group(3))) for m in _LINK.finditer(text)}


def is_up(flags: set[str]) -> bool:
    return "UP" in flags and "LOWER_UP" in flags


def _addresses(text: str) -> dict[str, list[str]]:
    """`ip -o -4 addr` -> {interface: [cidr, ...]}."""
    out: dict[str, list[str]] = {}
    for ln in text.splitlines():
        parts = ln.split()
        if len(parts) >= 4 and parts[2] == "inet":
            out.setdefault(parts[1], []).append(parts[3])
    return out


# A line of `ip -o link` or `ip -o addr` output: an item, not something a command said.
_IP_LINE = re.compile(r"^\d+:\s+\S")


def _failed(res: Result) -> str | None:
    """Why a check that reads several items fails for its command's exit status alone: what
    the command said besides the `ip -o` lines it printed; None when it exited 0."""
    if res.ok:
        return None
    said = [ln for ln in res.output.splitlines()
            if ln.strip() and not _IP_LINE.match(ln) and not ln.startswith(SECTION)]
    return _why_not(Result(res.command, res.exit_code, "\n".join(said), ""))


def interface_with_address(res: Result, iface: str, cidr: str) -> Verdict:
    """`ip -o link show dev IF && ip -o -4 addr show dev IF`: IF up (admin and carrier) with
    CIDR, and both commands succeeded."""
    found = links(res.stdout).get(iface)
    if found is None:
        return False, f"expected {iface} with {cidr}, found no {iface}: {_why_not(res)}"
    flags, _ = found
    addrs = _addresses(res.stdout).get(iface, [])
    if not is_up(flags):
        return False, f"expected {iface} up, found {','.join(sorted(flags))}"
    if cidr not in addrs:
        return False, f"expected {cidr} on {iface}, found {', '.join(addrs) or 'no address'}"
    failed = _failed(res)
    if failed:
        return False, f"{iface} up with {cidr}, but the check failed: {failed}"
    return True, f"{iface} up with {cidr}"


def underlay_nic(res: Result, cidr: str) -> Verdict:
    """`ip -o link show dev NIC && ip -o -4 addr`: the NIC is up and some interface (the NIC
    itself, or br-phy in the userspace layout) holds the underlay address."""
    nic_links = links(res.stdout)
    if len(nic_links) != 1:
        return False, f"underlay NIC not found: {_why_not(res)}"
    (nic, (flags, _)), = nic_links.items()
    if not is_up(flags):
        return False, f"expected {nic} up, found {','.join(sorted(flags))}"
    holders = [i for i, cidrs in _addresses(res.stdout).items() if cidr in cidrs]
    if not holders:
        failed = _failed(res)
        return False, f"{nic} up, but no interface holds {cidr}" + (f": {failed}" if failed else "")
    failed = _failed(res)
    if failed:
        return False, f"{nic} up, {cidr} on {holders[0]}, but the check failed: {failed}"
    return True, f"{nic} up; {cidr} on {holders[0]}"


# Several namespaces in one output: a line `@@ns NAME` starts the section of namespace NAME;
# the lines before the first are the node's own (section "").
SECTION = "@@ns "


def sections(text: str) -> dict[str, str]:
    """`@@ns NAME` sections of an output -> {NAME: its lines}; the node itself is ""."""
    out: dict[str, str] = {"": ""}
    current = ""
    for ln in text.splitlines():
        if ln.startswith(SECTION):
            current = ln[len(SECTION):].strip()
            out.setdefault(current, "")
            continue
        out[current] += ln + "\n"
    return out


def _where(name: str, ns: str) -> str:
    return f"{name} in {ns}" if ns else name


def mtu_inventory(res: Result, wanted: dict[str, list[str]], inner_mtu: int) -> Verdict:
    """`ip -o link` of the node, then of each namespace in its `@@ns NAME` section, chained
    with && -> every wanted interface exists with an MTU no larger than the inner MTU, and
    every namespace could be read (a command that failed fails the check)."""
    parts = sections(res.stdout)
    over, missing, count = [], [], 0
    for where, names in wanted.items():
        have = links(parts.get(where, ""))
        for name in names:
            label = _where(name, where)
            if name not in have:
                missing.append(label)
            elif have[name][1] > inner_mtu:
                over.append(f"{label} mtu {have[name][1]}")
            else:
                count += 1
    failed = _failed(res)
    if over or missing or failed:
        out = []
        if over:
            out.append(f"above the inner MTU {inner_mtu}: {', '.join(over)}")
        if missing:
            out.append(f"missing: {', '.join(missing)}")
        if failed:
            out.append(f"the listing failed: {failed}")
        return False, "; ".join(out)
    return True, f"{count} overlay interfaces, none above {inner_mtu}"


def underlay_mtu(res: Result, needed: int, also: tuple[str, ...] = ()) -> Verdict:
    """`ip -o link show dev NIC && ip -o link show dev ALSO...`: the underlay NIC (whatever
    its name: the one link that is not in `also`) and every interface in `also` (br-phy in the
    userspace layout) carry the inner MTU plus the tunnel's overhead. Each must be in the
    output, and the command must have succeeded."""
    have = links(res.stdout)
    nics = [n for n in have if n not in also]
    absent = [n for n in also if n not in have] + ([] if nics else ["the underlay NIC"])
    failed = _failed(res)
    if absent or len(nics) > 1 or failed:
        what = f"underlay interface not found: {', '.join(absent)}" if absent else \
            f"expected one underlay NIC, found {', '.join(nics)}" if len(nics) > 1 else "the check failed"
        return False, one_line(f"{what}: {failed}" if failed else what)
    names = nics + list(also)
    short = [f"{n} mtu {have[n][1]}" for n in names if have[n][1] < needed]
    if short:
        return False, f"below {needed} (inner MTU + tunnel overhead): {', '.join(short)}"
    return True, f"{', '.join(f'{n} mtu {have[n][1]}' for n in names)} (needs {needed})"


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
            missing.extend(_where(x, w) for x, w, have in ((a, "", node), (b, ns or "", here)) if x not in have)
            continue
        (ia, peer_a, ns_a), (ib, peer_b, _) = node[a], here[b]
        if ns is None:
            ok = peer_a == b and peer_b == a
            found = f"{a} paired with {peer_a}, {b} with {peer_b}"
        else:
            ok = peer_a == f"if{ib}" and peer_b == f"if{ia}" and ns_a in (None, ns)
            found = f"{a} (if{ia}) paired with {peer_a} in {ns_a or 'another namespace'}, {b} in {ns} (if{ib}) with {peer_b}"
        if not ok:
            wrong.append(f"expected {a} <-> {_where(b, ns or '')}, found {found}")
    failed = _failed(res)
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
    return f"ovs-vsctl failed: {_why_not(Result(res.command, res.exit_code, chr(10).join(said), ''))}"


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


# ---- captures ---------------------------------------------------------------------------
_TIMESTAMP = re.compile(r"^\d\d:\d\d:\d\d\.\d+ ")


def tcpdump_packets(text: str) -> list[str]:
    """One string per captured packet, without its timestamp: tcpdump prints VXLAN's inner
    packet on a line of its own."""
    packets: list[str] = []
    for line in text.splitlines():
        if _TIMESTAMP.match(line):
            packets.append(_TIMESTAMP.sub("", line))
        elif packets and line.strip() and not line.startswith(("listening on", "tcpdump:")) \
                and "packets" not in line:
            packets[-1] += " | " + line.strip()
    return packets


def encapsulated_echo(res: Result, marker: str) -> Verdict:
    """Passed when the capture holds encapsulated ICMP echo requests, each with the tunnel's
    own marker (GREv0, key=0x.., vni N, vni 0x..) as a whole token: vni 42 is not in vni 4242."""
    token = re.compile(re.escape(marker) + r"(?![0-9a-fA-Fx])")
    echoes = [p for p in tcpdump_packets(res.stdout) if "ICMP echo request" in p]
    if not echoes:
        if res.exit_code == 124:
            return False, "no encapsulated echo request captured before the capture's timeout"
        said = [ln for ln in res.output.splitlines() if not ln.startswith(("listening on", "tcpdump: verbose"))]
        return False, f"no encapsulated echo request captured: {one_line(chr(10).join(said)) or f'exit {res.exit_code}'}"
    wrong = [p for p in echoes if not token.search(p)]
    if wrong:
        return False, f"expected '{marker}' in every packet, found: {one_line(wrong[0])}"
    if not res.ok:
        # tcpdump -c 2 exits 0 once it has both: a capture its timeout (or an error) ended is
        # not the proof, whatever it caught on the way.
        why = "the capture's timeout ended it" if res.exit_code == 124 else f"tcpdump exited {res.exit_code}"
        return False, f"{len(echoes)} of 2 encapsulated echo requests captured, then {why}: {one_line(echoes[0])}"
    return True, f"{len(echoes)} captured: {one_line(echoes[0])}"
