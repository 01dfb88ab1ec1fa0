"""Judges: a command's real output -> (passed, one line of evidence).

A judge passes only on positive evidence for what its check claims (a reply with its round
trip, a version string, the kernel's own refusal). Anything else fails: an empty output, a
timeout, a missing namespace or binary. Pure functions, tested on recorded real outputs."""
from __future__ import annotations

import re

from labgen.nodes.runner import Result

Verdict = tuple[bool, str]

EVIDENCE_WIDTH = 160


def one_line(text: str, width: int = EVIDENCE_WIDTH) -> str:
    """The first non-empty lines of `text` joined into one short line."""
    kept = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    line = "; ".join(kept)
    return line if len(line) <= width else line[: width - 3] + "..."


def why_not(res: Result) -> str:
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
    return False, why_not(res)


_REPLY_IN = re.compile(r"^reply in ([\d.]+) ms$")


def reply_ms(evidence: str) -> float | None:
    """The round trip in ms that ping_reply's evidence of a passed check names; None for any
    other text."""
    m = _REPLY_IN.match(evidence)
    return float(m.group(1)) if m else None


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
    return False, f"no refusal from the kernel: {why_not(res)}"


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
    does not answer, or is missing from the output, is named. The evidence says where each
    version came from: ovsdb-server's is the one its database holds (written when OVS
    started), ovs-vswitchd's is what the daemon itself said."""
    sections = _daemon_sections(res.stdout)
    if not sections:
        return False, f"neither daemon asked: {why_not(res)}"
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
        return False, f"both daemons answered, but the check exited {res.exit_code}: {why_not(res)}"
    return True, (f"ovsdb-server answers ({versions['ovsdb-server']} in its database), "
                  f"ovs-vswitchd {versions['ovs-vswitchd']} (from its control socket)")


# What ovs_daemons' evidence says ovs-vswitchd itself answered (the stage line's figure).
_VSWITCHD_SAID = re.compile(r"\bovs-vswitchd (\S+) \(from its control socket\)")


def vswitchd_version(evidence: str) -> str | None:
    """The version ovs-vswitchd gave on its control socket, read back from ovs_daemons'
    evidence of a passed check; None for any other text."""
    m = _VSWITCHD_SAID.search(evidence)
    return m.group(1) if m else None


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


def command_failure(res: Result) -> str | None:
    """Why a check that reads several items fails for its command's exit status alone: what
    the command said besides the `ip -o` lines it printed; None when it exited 0."""
    if res.ok:
        return None
    said = [ln for ln in res.output.splitlines()
            if ln.strip() and not _IP_LINE.match(ln) and not ln.startswith(SECTION)]
    return why_not(Result(res.command, res.exit_code, "\n".join(said), ""))


def interface_with_address(res: Result, iface: str, cidr: str) -> Verdict:
    """`ip -o link show dev IF && ip -o -4 addr show dev IF`: IF up (admin and carrier) with
    CIDR, and both commands succeeded."""
    found = links(res.stdout).get(iface)
    if found is None:
        return False, f"expected {iface} with {cidr}, found no {iface}: {why_not(res)}"
    flags, _ = found
    addrs = _addresses(res.stdout).get(iface, [])
    if not is_up(flags):
        return False, f"expected {iface} up, found {','.join(sorted(flags))}"
    if cidr not in addrs:
        return False, f"expected {cidr} on {iface}, found {', '.join(addrs) or 'no address'}"
    failed = command_failure(res)
    if failed:
        return False, f"{iface} up with {cidr}, but the check failed: {failed}"
    return True, f"{iface} up with {cidr}"


def underlay_nic(res: Result, cidr: str) -> Verdict:
    """`ip -o link show dev NIC && ip -o -4 addr`: the NIC is up and some interface (the NIC
    itself, or br-phy in the userspace layout) holds the underlay address."""
    nic_links = links(res.stdout)
    if len(nic_links) != 1:
        return False, f"underlay NIC not found: {why_not(res)}"
    (nic, (flags, _)), = nic_links.items()
    if not is_up(flags):
        return False, f"expected {nic} up, found {','.join(sorted(flags))}"
    holders = [i for i, cidrs in _addresses(res.stdout).items() if cidr in cidrs]
    if not holders:
        failed = command_failure(res)
        return False, f"{nic} up, but no interface holds {cidr}" + (f": {failed}" if failed else "")
    failed = command_failure(res)
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


def named_in(name: str, ns: str) -> str:
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
            label = named_in(name, where)
            if name not in have:
                missing.append(label)
            elif have[name][1] > inner_mtu:
                over.append(f"{label} mtu {have[name][1]}")
            else:
                count += 1
    failed = command_failure(res)
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
    failed = command_failure(res)
    if absent or len(nics) > 1 or failed:
        what = f"underlay interface not found: {', '.join(absent)}" if absent else \
            f"expected one underlay NIC, found {', '.join(nics)}" if len(nics) > 1 else "the check failed"
        return False, one_line(f"{what}: {failed}" if failed else what)
    names = nics + list(also)
    short = [f"{n} mtu {have[n][1]}" for n in names if have[n][1] < needed]
    if short:
        return False, f"below {needed} (inner MTU + tunnel overhead): {', '.join(short)}"
    return True, f"{', '.join(f'{n} mtu {have[n][1]}' for n in names)} (needs {needed})"


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
