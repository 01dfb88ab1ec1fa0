"""Judges: a command's real output -> (passed, one line of evidence).

A judge passes only on positive evidence for what its check claims (a reply with its round
trip, a version string, the kernel's own refusal). Anything else fails: an empty output, a
timeout, a missing namespace or binary. Pure functions, tested on recorded real outputs."""
from __future__ import annotations

import json
import re

from . import ovsdb
from .runner import Result

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


def ovs_version(res: Result) -> Verdict:
    m = _VERSION.match(res.stdout.strip())
    if res.ok and m:
        return True, f"ovs-vswitchd {m.group(1)}"
    return False, _why_not(res)


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


def interface_with_address(res: Result, iface: str, cidr: str) -> Verdict:
    """`ip -o link show dev IF; ip -o -4 addr show dev IF`: IF up (admin and carrier) with CIDR."""
    found = links(res.stdout).get(iface)
    if found is None:
        return False, f"expected {iface} with {cidr}, found no {iface}: {_why_not(res)}"
    flags, _ = found
    addrs = _addresses(res.stdout).get(iface, [])
    if not is_up(flags):
        return False, f"expected {iface} up, found {','.join(sorted(flags))}"
    if cidr not in addrs:
        return False, f"expected {cidr} on {iface}, found {', '.join(addrs) or 'no address'}"
    return True, f"{iface} up with {cidr}"


def underlay_nic(res: Result, cidr: str) -> Verdict:
    """`ip -o link show dev NIC; ip -o -4 addr`: the NIC is up and some interface (the NIC
    itself, or br-phy in the userspace layout) holds the underlay address."""
    nic_links = links(res.stdout)
    if len(nic_links) != 1:
        return False, f"underlay NIC not found: {_why_not(res)}"
    (nic, (flags, _)), = nic_links.items()
    if not is_up(flags):
        return False, f"expected {nic} up, found {','.join(sorted(flags))}"
    holders = [i for i, cidrs in _addresses(res.stdout).items() if cidr in cidrs]
    if not holders:
        return False, f"{nic} up, but no interface holds {cidr}"
    return True, f"{nic} up; {cidr} on {holders[0]}"


def mtu_inventory(text: str, wanted: dict[str, list[str]], inner_mtu: int) -> Verdict:
    """`@@ns NAME` sections of `ip -o link` (the node itself is section "") -> every wanted
    interface exists with an MTU no larger than the inner MTU."""
    sections: dict[str, str] = {}
    current = ""
    for ln in text.splitlines():
        if ln.startswith("@@ns "):
            current = ln.split(None, 1)[1].strip()
            continue
        sections[current] = sections.get(current, "") + ln + "\n"
    over, missing, count = [], [], 0
    for where, names in wanted.items():
        have = links(sections.get(where, ""))
        for name in names:
            label = f"{name} in {where}" if where else name
            if name not in have:
                missing.append(label)
            elif have[name][1] > inner_mtu:
                over.append(f"{label} mtu {have[name][1]}")
            else:
                count += 1
    if over or missing:
        parts = []
        if over:
            parts.append(f"above the inner MTU {inner_mtu}: {', '.join(over)}")
        if missing:
            parts.append(f"missing: {', '.join(missing)}")
        return False, "; ".join(parts)
    return True, f"{count} overlay interfaces, none above {inner_mtu}"


def underlay_mtu(res: Result, names: list[str], needed: int) -> Verdict:
    """The underlay interfaces carry the inner MTU plus the tunnel's overhead."""
    have = links(res.stdout)
    short = [f"{n} mtu {have[n][1]}" for n in names if n in have and have[n][1] < needed]
    absent = [n for n in names if n not in have]
    if absent or not names:
        return False, f"underlay interface not found: {', '.join(absent) or _why_not(res)}"
    if short:
        return False, f"below {needed} (inner MTU + tunnel overhead): {', '.join(short)}"
    return True, f"{', '.join(f'{n} mtu {have[n][1]}' for n in names)} (needs {needed})"


# ---- tunnel ports -----------------------------------------------------------------------
def tunnel_ports(text: str, want: dict[str, tuple[str, str, str | None]]) -> Verdict:
    """`ovs-vsctl -f json list interface` rows -> each wanted port with its type, remote and
    key (GRE key / VXLAN VNI; None = no key or 0) and a real OpenFlow port number."""
    try:
        rows = {r["name"]: r for r in ovsdb.rows(json.loads(text))}
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
    if bad:
        return False, "; ".join(bad)
    return True, ", ".join(good)


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
    return True, f"{len(echoes)} captured: {one_line(echoes[0])}"
