"""Options -> Lab: the one place that checks user input and resolves every name and address
of the lab (the model, labgen/lab/model.py, holds them)."""
from __future__ import annotations

import ipaddress

from labgen.errors import InputError
from labgen.lab import boxes as box_catalog
from labgen.lab import stp as stp_modes
from labgen.lab import tunnels
from labgen.lab.model import (
    BRIDGES,
    DATAPATHS,
    DEFAULT_UNDERLAY_MTU,
    LOOP,
    MAX_NODES,
    MAX_TIMEOUT,
    MIN_NODES,
    NAME_RE,
    TUNNEL_BRIDGE,
    Lab,
    Namespace,
    Node,
    Options,
    Providers,
    Tunnel,
    Veth,
)


def _choice(value: str, allowed: tuple[str, ...], what: str) -> str:
    if value not in allowed:
        raise InputError(f"unknown {what} {value!r}: use {' or '.join(allowed)}")
    return value


def _network(text: str, what: str, flag: str, example: str) -> ipaddress.IPv4Network:
    try:
        loose = ipaddress.ip_network(text, strict=False)
    except ValueError as exc:
        raise InputError(f"{what} {text!r} is not a network address in CIDR form: "
                         f"pass e.g. {flag} {example}") from exc
    if loose.version != 4:
        raise InputError(f"{what} {text!r} is IPv6; labgen builds IPv4 underlays and overlays: "
                         f"pass an IPv4 CIDR to {flag}, e.g. {example}")
    try:
        return ipaddress.IPv4Network(text, strict=True)
    except ValueError:
        # Parses, but only without strict: an address inside the network, not the network.
        raise InputError(f"{what} {text!r} has host bits set: did you mean {flag} {loose}?") from None


def check_timeout(seconds: float | None) -> None:
    """--timeout of create and verify: more than 0 (at 0 spanning tree has no time at all, and
    every lab fails) and at most MAX_TIMEOUT; not a number or infinite is refused too."""
    if seconds is not None and not 0 < seconds <= MAX_TIMEOUT:
        raise InputError(f"--timeout {seconds:g} is out of range: give more than 0 and at most "
                         f"{MAX_TIMEOUT} seconds to wait for spanning tree, or drop it (30-75 s "
                         f"by STP mode)")


def node_names(count: int) -> list[str]:
    return [f"node{k}" for k in range(1, count + 1)]


def overlay_offset(index: int, ns_pos: int) -> int:
    """Host part of a namespace address: A1 .1, B1 .2; node k>=2: A .10(k-1), B .10(k-1)+1."""
    if index == 1:
        return 1 + ns_pos
    return 10 * (index - 1) + ns_pos


def build_lab(opts: Options, providers: Providers, kvm_usable: bool | None = None) -> Lab:
    """Validate the options and resolve every name and address of the lab."""
    kind = tunnels.get(opts.tunnel)
    tunnel = kind.name
    prov = providers.get(opts.provider)
    provider = prov.name
    stp_mode = _choice(opts.stp, stp_modes.NAMES, "spanning tree mode")
    timers = _choice(opts.stp_timers, stp_modes.TIMER_SETS, "STP timer set")

    if not MIN_NODES <= opts.nodes <= MAX_NODES:
        raise InputError(f"--nodes {opts.nodes} is out of range: a lab has "
                         f"{MIN_NODES} to {MAX_NODES} nodes")

    datapath = opts.datapath or prov.datapaths[0]
    _choice(datapath, DATAPATHS, "datapath")

    box = box_catalog.get(opts.box or prov.default_box, providers=providers.names)
    if provider not in box.providers:
        raise InputError(f"box {box.name!r} is for provider {', '.join(box.providers)}, not "
                         f"{provider}: drop --box or pick one listed by labgen boxes")

    name = opts.name if opts.name is not None else tunnel
    if not NAME_RE.match(name):
        raise InputError(f"lab name {name!r} is not usable: use 1-20 characters, lowercase "
                         f"letters, digits and '-', starting with a letter (e.g. --name gre-lab)")

    kind.check_key(opts.key)

    underlay = _network(opts.underlay, "underlay", "--underlay", "10.10.10.0/24")
    overlay = _network(opts.overlay, "overlay", "--overlay", "192.168.10.0/24")
    if underlay.overlaps(overlay):
        raise InputError(f"overlay {overlay} overlaps underlay {underlay}: the namespaces' "
                         f"network must be separate from the hosts' (e.g. --overlay 192.168.10.0/24)")
    prov.validate(opts, underlay, datapath)
    settings = prov.settings(opts, kvm_usable, name)
    underlay_mtu = opts.underlay_mtu
    if underlay_mtu is None:
        underlay_mtu = (settings.underlay_mtu if settings else None) or DEFAULT_UNDERLAY_MTU
    if not 1280 <= underlay_mtu <= 9000:
        raise InputError(f"--underlay-mtu {underlay_mtu} is out of range: use 1280 to 9000")
    # Nodes take .1...N, the hypervisor the last usable address.
    hypervisor_offset = underlay.num_addresses - 2
    if hypervisor_offset <= opts.nodes:
        raise InputError(f"underlay {underlay} is too small for {opts.nodes} nodes and the host: "
                         f"use a shorter prefix, e.g. /24")
    need = overlay_offset(opts.nodes, 1)
    if need >= overlay.num_addresses - 1:
        raise InputError(f"overlay {overlay} is too small for {opts.nodes} nodes (needs host "
                         f"part .{need}): use a shorter prefix, e.g. /24")

    inner_mtu = underlay_mtu - kind.overhead(opts.key is not None)

    under_ip = {k: str(underlay.network_address + k) for k in range(1, opts.nodes + 1)}
    nodes = []
    for k, node_name in enumerate(node_names(opts.nodes), start=1):
        namespaces, veths = [], []
        for pos, (letter, bridge) in enumerate((("a", "br2"), ("b", "br3"))):
            ns = f"{letter.upper()}{k}"
            namespaces.append(Namespace(
                name=ns, address=str(overlay.network_address + overlay_offset(k, pos)),
                interface=f"{letter}{k}.2", bridge=bridge))
            veths.append(Veth(a=f"{letter}{k}.1", bridge_a=bridge, b=f"{letter}{k}.2", namespace=ns))
        for pair, br_a, br_b in LOOP:
            veths.append(Veth(a=f"{pair}.1", bridge_a=br_a, b=f"{pair}.2", bridge_b=br_b))
        ports = tuple(
            Tunnel(port=kind.port_name(f"node{j}"), type=kind.ovs_type, remote_node=f"node{j}", remote_ip=under_ip[j])
            for j in range(1, opts.nodes + 1) if j != k
        )
        nodes.append(Node(index=k, name=node_name, underlay_ip=under_ip[k],
                          namespaces=tuple(namespaces), veths=tuple(veths), tunnels=ports))

    return Lab(
        name=name, tunnel=tunnel, key=opts.key, provider=provider, datapath=datapath,
        stp=stp_mode, stp_timers=timers, underlay=str(underlay),
        underlay_hypervisor_ip=str(underlay.network_address + hypervisor_offset),
        underlay_mtu=underlay_mtu, overlay=str(overlay), inner_mtu=inner_mtu,
        bridges=BRIDGES, tunnel_bridge=TUNNEL_BRIDGE, nodes=tuple(nodes), box=box,
        settings=settings,
    )
