"""Where a VM lab's nodes run: hypervisors (libvirtd) named by URI, and the underlay links
between nodes on different hypervisors.

`--host node2=qemu+ssh://root@hv-b/system` places a node; nodes without one run on the
local libvirt (qemu:///system). Each hypervisor gets its own Vagrant project, because
vagrant-libvirt drives one libvirt connection per Vagrantfile. Nodes on one hypervisor share
a libvirt network as their underlay; nodes on different hypervisors cannot, so their underlay
NICs are joined point to point by a UDP tunnel (libvirt's `<interface type='udp'>`): qemu sends
each guest Ethernet frame as one UDP datagram to the other hypervisor (README and docs/design.md:
"Labs across hypervisors").
"""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from typing import Any

from labgen.errors import InputError

# (socket, subprocess, zlib and urllib are imported where used: every command imports this
# module through the model, and only labs with --host need them.)

LOCAL_URI = "qemu:///system"
# One guest frame per datagram: the outer IPv4 (20) and UDP (8) headers plus the guest's own
# Ethernet header (14; qemu sends no FCS). On a 1500-byte path between the hypervisors the guests'
# underlay NICs get 1458, so no datagram is ever fragmented on the way.
HYPERVISOR_PATH_MTU = 1500
UDP_LINK_OVERHEAD = 20 + 8 + 14
SPLIT_UNDERLAY_MTU = HYPERVISOR_PATH_MTU - UDP_LINK_OVERHEAD
# UDP ports of the links: below Linux's ephemeral range (32768+), a block per lab name so two
# labs rarely ask for the same ports (create checks they are free on every hypervisor).
PORT_BASE, PORT_BLOCKS, PORT_BLOCK = 20000, 1000, 10

_SAFE_URI = re.compile(r"^[A-Za-z0-9@:/._=&?%+~-]+$")
_HOST = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$")
_USER = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
_EXAMPLE = "e.g. --host node2=qemu+ssh://root@hv-b/system"


@dataclass(frozen=True)
class Hypervisor:
    """One hypervisor of a lab (the libvirtd at a URI) and the Vagrant project that drives it."""

    name: str                   # "local", or the URI's host (and port): names the project
    uri: str
    nodes: tuple[str, ...]
    project: str                # the Vagrant project's directory, relative to the lab dir

    @property
    def remote(self) -> bool:
        return self.uri != LOCAL_URI

    def ssh_argv(self) -> list[str]:
        """`ssh ... host` as the guests' proxy reaches this hypervisor (user, port, key and, where
        the proxy honours them, the host-key options of the URI): for the pre-checks."""
        return ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=15", *_ssh_args(self.uri)]

    @property
    def proxy_command(self) -> str | None:
        """How Vagrant and labgen reach a guest's SSH on this hypervisor: through it. None
        leaves it to vagrant-libvirt, which derives `ssh host -p PORT -l USER -i KEY -W %h:%p`
        from the URI: vagrant-libvirt 0.11 fails to load a Vagrantfile that sets its own
        proxy command when the URI has a port."""
        if not self.remote or uri_parts(self.uri)["port"]:
            return None
        return "ssh " + " ".join(shlex.quote(a) for a in _ssh_args(self.uri)) + " -W %h:%p"


@dataclass(frozen=True)
class UdpLink:
    """A node's underlay NIC on a lab across hypervisors: a UDP socket on its hypervisor,
    sending to the other node's socket on the other hypervisor."""

    node: str
    local_ip: str
    local_port: int
    remote_ip: str
    remote_port: int


def uri_parts(uri: str) -> dict[str, Any]:
    """user, host, port and the SSH parameters (keyfile, no_verify, known_hosts) of a
    qemu+ssh URI."""
    from urllib.parse import parse_qs, urlsplit
    parts = urlsplit(uri)
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    return {"user": parts.username, "host": parts.hostname or "", "port": parts.port,
            "keyfile": query.get("keyfile"), "no_verify": query.get("no_verify") == "1",
            "known_hosts": query.get("known_hosts")}


def _ssh_args(uri: str) -> list[str]:
    p = uri_parts(uri)
    argv = []
    if p["port"]:       # vagrant-libvirt's own proxy: no host-key options (see proxy_command)
        argv += ["-p", str(p["port"])]
    elif p["no_verify"]:      # what libvirt's no_verify=1 means for its own ssh
        argv += ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                 "-o", "LogLevel=ERROR"]
    elif p["known_hosts"]:
        argv += ["-o", f"UserKnownHostsFile={p['known_hosts']}"]
    if p["user"]:
        argv += ["-l", p["user"]]
    if p["keyfile"]:
        argv += ["-i", p["keyfile"]]
    return [*argv, p["host"]]


def check_uri(uri: str, where: str) -> str:
    """A libvirt URI labgen can drive: qemu:///system, or qemu+ssh://[user@]host[:port]/system
    (SSH also carries Vagrant's and labgen's connections to the guests there)."""
    from urllib.parse import urlsplit
    if uri == LOCAL_URI:
        return uri
    if not _SAFE_URI.match(uri):
        raise InputError(f"{where}: {uri!r} has characters a libvirt URI here may not hold: "
                         f"{_EXAMPLE}")
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError:
        raise InputError(f"{where}: {uri!r} is not a libvirt URI: {_EXAMPLE}") from None
    if parts.scheme != "qemu+ssh" or parts.path != "/system" or not parts.hostname:
        raise InputError(f"{where}: {uri!r} is not a system libvirt reached over SSH: use "
                         f"qemu:///system or qemu+ssh://[user@]host[:port]/system, {_EXAMPLE}")
    if not _HOST.match(parts.hostname) or (parts.username and not _USER.match(parts.username)) \
            or (port is not None and not 0 < port < 65536):
        raise InputError(f"{where}: {uri!r} has a bad user, host or port: {_EXAMPLE}")
    return uri


def placements(entries: tuple[str, ...], node_names: list[str]) -> dict[str, str]:
    """{node: URI} for every node, from `--host NODE=URI` entries (others: the local libvirt)."""
    placed: dict[str, str] = {}
    for entry in entries:
        node, sep, uri = entry.partition("=")
        if not sep or not node or not uri:
            raise InputError(f"--host {entry!r} is not NODE=URI: {_EXAMPLE}")
        if node not in node_names:
            raise InputError(f"--host {entry!r}: the lab has no {node} (its nodes are "
                             f"{node_names[0]} to {node_names[-1]})")
        if node in placed:
            raise InputError(f"--host names {node} twice: give each node one host")
        placed[node] = check_uri(uri, f"--host {node}")
    return {n: placed.get(n, LOCAL_URI) for n in node_names}


def _hypervisor_name(uri: str) -> str:
    if uri == LOCAL_URI:
        return "local"
    p = uri_parts(uri)
    return str(p["host"]) + (f"-{p['port']}" if p["port"] else "")


def plan(entries: tuple[str, ...], node_names: list[str]) -> tuple[Hypervisor, ...]:
    """The lab's hypervisors, in node order; a lab on one hypervisor keeps its project in the
    lab dir."""
    where = placements(entries, node_names)
    uris = list(dict.fromkeys(where.values()))
    names: list[str] = []
    for uri in uris:
        name = _hypervisor_name(uri)
        names.append(name if name not in names else f"{name}-{len(names) + 1}")
    single = len(uris) == 1
    return tuple(
        Hypervisor(name=name, uri=uri, nodes=tuple(n for n in node_names if where[n] == uri),
                   project="." if single else f"hosts/{name}")
        for name, uri in zip(names, uris, strict=True))


def links(lab_name: str, hypervisors: tuple[Hypervisor, ...], index: dict[str, int]) -> tuple[UdpLink, ...]:
    """The two ends of the underlay link of a two-node lab across two hypervisors. Each
    hypervisor's address is where the other sends to: a remote hypervisor's resolved name,
    and for this machine the source address of its route toward the other hypervisor."""
    import zlib
    if len(hypervisors) < 2:
        return ()
    (a, b) = hypervisors
    (na,), (nb,) = a.nodes, b.nodes
    addr = {a.name: _address(a, b), b.name: _address(b, a)}
    base = PORT_BASE + zlib.crc32(lab_name.encode()) % PORT_BLOCKS * PORT_BLOCK
    port = {na: base + index[na], nb: base + index[nb]}
    return (UdpLink(na, addr[a.name], port[na], addr[b.name], port[nb]),
            UdpLink(nb, addr[b.name], port[nb], addr[a.name], port[na]))


def _resolve(host: str) -> str:
    import socket
    try:
        return str(socket.getaddrinfo(host, None, socket.AF_INET)[0][4][0])
    except OSError as exc:
        raise InputError(f"cannot resolve libvirt host {host!r} to an IPv4 address "
                         f"({exc}): check the name in --host") from None


def _address(this: Hypervisor, other: Hypervisor) -> str:
    if this.remote:
        return _resolve(uri_parts(this.uri)["host"])
    import subprocess
    target = _resolve(uri_parts(other.uri)["host"])
    out = subprocess.run(["ip", "-4", "route", "get", target], capture_output=True, text=True,
                         timeout=10).stdout
    m = re.search(r"\bsrc (\S+)", out)
    if not m:
        raise InputError(f"this machine has no IPv4 route to libvirt host {target}: the "
                         f"underlay link needs one (check with ip route get {target})")
    return m.group(1)
