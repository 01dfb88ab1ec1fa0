"""The mark a cut leaves on its node before it changes anything, in OVS's database (it lives
on the node, so it outlasts labgen and is read through the same Runner): what the cut
changes, "veth" and the interfaces it takes down, or "tunnel" and whether the cut adds the
clsact qdisc (tunnelcut.py). The restore clears it after undoing the change; a mark still
there means a failover was killed mid-cut (leftovers.py undoes it)."""
from __future__ import annotations

KEY = "labgen-failover-cut"
GET = f"ovs-vsctl --timeout=5 --if-exists get Open_vSwitch . external_ids:{KEY}"
CLEAR = f"ovs-vsctl --timeout=5 remove Open_vSwitch . external_ids {KEY}"


def set_command(what: str) -> str:
    """Shell: mark the node with `what` (words; a shell variable in it is expanded)."""
    return f'ovs-vsctl --timeout=5 set Open_vSwitch . "external_ids:{KEY}=\\"{what}\\""'


def veth(ifaces: list[str]) -> str:
    return set_command(" ".join(["veth", *ifaces]))


def tunnel(qdisc_var: str) -> str:
    """The tunnel's mark; `qdisc_var` names the shell variable holding ADDED or FOUND."""
    return set_command(f"tunnel ${qdisc_var}")
