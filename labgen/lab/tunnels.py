"""Everything that differs between tunnel kinds, in one table.

The model, the node script, the checks, the capture, the CLI's choices and the README's table
read a `TunnelKind`; nothing else names a kind. Adding one is one entry here plus its golden
files and test parameters (docs/development.md: "Adding a tunnel kind").

Overhead on an IPv4 underlay is counted from the inner Ethernet header: the inner MTU excludes
it, the outer IP packet must fit the underlay MTU. It is also where the inner IPv4 header
starts in the outer packet, which the capture filter needs:
    outer IPv4 20 + tunnel header(s) + inner Ethernet 14
OVS adds no GRE checksum or sequence number and no Geneve options unless asked, so the
figures are exact; the MTU stage proves them on every lab (a full inner-MTU frame crosses
with don't-fragment set).
"""
from __future__ import annotations

import base64
from dataclasses import dataclass

from labgen.errors import InputError

OUTER_IPV4 = 20
INNER_ETHERNET = 14


@dataclass(frozen=True)
class TunnelKind:
    name: str               # what the user types: labgen create NAME
    title: str              # how people write it
    ovs_type: str           # OVS Interface type
    key_name: str           # what the tunnel calls its key: "key" (GRE) or "VNI"
    key_bits: int
    header: int             # tunnel header bytes between the outer IPv4 and the inner Ethernet
    key_bytes: int          # bytes a configured key adds to the header (GRE only)
    ip_proto: int           # outer IP protocol
    udp_port: int | None    # IANA port of UDP tunnels (the kernel's and OVS's default)
    tcpdump_tag: str        # how tcpdump -nn -v names the encapsulation in a packet line
    key_shown_hex: bool     # tcpdump prints this kind's key in hex (GRE key=0x.., Geneve vni 0x..)

    # ---- sizes ----------------------------------------------------------------------------
    def overhead(self, keyed: bool) -> int:
        """Bytes the tunnel adds to an inner frame, = the inner IPv4 header's offset."""
        return OUTER_IPV4 + self.header + (self.key_bytes if keyed else 0) + INNER_ETHERNET

    @property
    def key_max(self) -> int:
        return (1 << self.key_bits) - 1

    @property
    def key_label(self) -> str:
        """"GRE key", "VXLAN VNI", "Geneve VNI"."""
        return f"{self.title} {self.key_name}"

    def check_key(self, key: int | None) -> None:
        if key is not None and not 0 <= key <= self.key_max:
            raise InputError(f"{self.key_label} {key} is out of range: use 0 to {self.key_max}")

    # ---- on the wire ----------------------------------------------------------------------
    @property
    def label(self) -> str:
        """"GRE (IP protocol 47)", "VXLAN (UDP 4789)"."""
        return f"{self.title} ({f'UDP {self.udp_port}' if self.udp_port else f'IP protocol {self.ip_proto}'})"

    @property
    def capture_filter(self) -> str:
        """All of this tunnel's traffic, either way (labgen capture: the article's view)."""
        return f"udp port {self.udp_port}" if self.udp_port else f"ip proto {self.ip_proto}"

    @property
    def arriving_filter(self) -> str:
        """Traffic arriving for this node's tunnel endpoint (the capture proof)."""
        return f"udp dst port {self.udp_port}" if self.udp_port else f"ip proto {self.ip_proto}"

    def marker(self, key: int | None) -> str:
        """What tcpdump -nn -v prints in every packet of this tunnel with this key: the
        capture proof needs it in each echo request it counts."""
        if self.name == "gre" and not key:
            return "GREv0"              # OVS sends no key field for key 0 / none
        value = key or 0
        shown = f"0x{value:x}" if self.key_shown_hex else str(value)
        return f"{self.tcpdump_tag}{shown}"

    # ---- firewall: only this tunnel, only from the underlay ------------------------------
    def firewalld_rule(self, underlay: str) -> str:
        what = (f'port port="{self.udp_port}" protocol="udp"' if self.udp_port
                else f'protocol value="{self.name}"')
        return f'rule family="ipv4" source address="{underlay}" {what} accept'

    def firewalld_rule_xml(self, underlay: str) -> str:
        """The same rule as firewalld keeps it in a zone file (one line): what labgen's box
        puts into a pristine default zone before firewalld's first start, from the kernel
        command line (boot_rule)."""
        what = (f'<port port="{self.udp_port}" protocol="udp"/>' if self.udp_port
                else f'<protocol value="{self.name}"/>')
        return f'<rule family="ipv4"><source address="{underlay}"/>{what}<accept/></rule>'

    def boot_rule(self, underlay: str) -> str:
        """firewalld_rule_xml in base64: a kernel command line word (labgen.firewalld-rule=),
        and the mark the box leaves once its default zone holds it."""
        return base64.b64encode(self.firewalld_rule_xml(underlay).encode()).decode()

    def iptables_match(self, underlay: str) -> str:
        what = f"-p udp --dport {self.udp_port}" if self.udp_port else f"-p {self.name}"
        return f"-s {underlay} {what}"

    # ---- a lab provisioned again as another kind ------------------------------------------
    @property
    def others(self) -> list[TunnelKind]:
        """The other kinds: what a node provisioned before as one of them may still hold
        (tunnel ports, firewall rules), which the node script takes away."""
        return [k for k in KINDS.values() if k is not self]

    def port_name(self, remote_node: str) -> str:
        """The tunnel port towards remote_node: the model's name, and the pattern the node
        script recognises as labgen's when it takes another kind's ports away."""
        return f"{self.name}-{remote_node}"


KINDS: dict[str, TunnelKind] = {k.name: k for k in (
    # GRE base header 4 (flags, protocol); the key field adds 4. Key is 32 bits.
    TunnelKind(name="gre", title="GRE", ovs_type="gre", key_name="key", key_bits=32,
               header=4, key_bytes=4, ip_proto=47, udp_port=None,
               tcpdump_tag="key=", key_shown_hex=True),
    # UDP 8 + VXLAN header 8; the VNI is 24 bits of that header.
    TunnelKind(name="vxlan", title="VXLAN", ovs_type="vxlan", key_name="VNI", key_bits=24,
               header=8 + 8, key_bytes=0, ip_proto=17, udp_port=4789,
               tcpdump_tag="vni ", key_shown_hex=False),
    # UDP 8 + Geneve base header 8 (no options from OVS); the VNI is 24 bits.
    TunnelKind(name="geneve", title="Geneve", ovs_type="geneve", key_name="VNI", key_bits=24,
               header=8 + 8, key_bytes=0, ip_proto=17, udp_port=6081,
               tcpdump_tag="vni ", key_shown_hex=True),
)}
NAMES = tuple(KINDS)


def get(name: str) -> TunnelKind:
    """The kind called `name`; the one place an unknown kind is refused."""
    try:
        return KINDS[name]
    except KeyError:
        raise InputError(f"unknown tunnel type {name!r}: use {', '.join(NAMES[:-1])} or "
                         f"{NAMES[-1]}") from None


def readme_table() -> str:
    """The README's table of tunnel kinds (tests/unit/test_tunnels.py keeps the README equal)."""
    rows = ["| kind | OVS type | on the underlay | key | overhead (with key) |",
            "|---|---|---|---|---|"]
    for k in KINDS.values():
        keyed = k.overhead(True)
        over = f"{k.overhead(False)} B" + (f" ({keyed} B)" if keyed != k.overhead(False) else "")
        rows.append(f"| `{k.name}` | `{k.ovs_type}` | {k.label} | {k.key_name}, "
                    f"{k.key_bits} bit (`--key` / `--vni`) | {over} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(readme_table())
