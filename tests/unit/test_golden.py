"""Golden files: what `labgen render` writes for four labs, byte for byte.

Regenerate after an intended change, then read the diff before committing:
    pytest tests/unit/test_golden.py --update-golden      (or LABGEN_UPDATE_GOLDEN=1)
"""
from __future__ import annotations

import difflib
import os
import re
from pathlib import Path

import pytest
from support import GOLDEN
from support.golden import CASES, render_case

# Not compared: the picture depends on the Graphviz version; logs/ is empty at render time.
SKIP = {"topology.svg"}


def text_files(lab_dir: Path) -> dict[str, bytes]:
    """Every rendered text file, by path relative to the lab dir."""
    return {str(p.relative_to(lab_dir)): p.read_bytes() for p in sorted(lab_dir.rglob("*"))
            if p.is_file() and p.name not in SKIP and not p.name.startswith(".")}


def updating(config) -> bool:
    return bool(config.getoption("--update-golden")) or os.environ.get("LABGEN_UPDATE_GOLDEN") == "1"


def udiff(name: str, want: bytes, got: bytes) -> str:
    return "".join(difflib.unified_diff(
        want.decode().splitlines(keepends=True), got.decode().splitlines(keepends=True),
        fromfile=f"golden/{name}", tofile=f"rendered/{name}"))


def update(case: str, rendered: dict[str, bytes]) -> list[str]:
    """Write the golden files of a case; returns what changed."""
    folder = GOLDEN / case
    old = text_files(folder) if folder.exists() else {}
    changes = []
    for rel, data in rendered.items():
        if old.get(rel) != data:
            changes.append(f"{'updated' if rel in old else 'added'} golden/{case}/{rel}")
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            (folder / rel).write_bytes(data)
    for rel in sorted(set(old) - set(rendered)):
        (folder / rel).unlink()
        changes.append(f"removed golden/{case}/{rel}")
    return changes


@pytest.mark.parametrize("case", sorted(CASES))
def test_rendered_files_match_golden(case, tmp_path, request, capsys):
    lab_dir = render_case(case, tmp_path)
    rendered = text_files(lab_dir)
    assert {"lab.json", "README.md", "topology.dot", "provision/node1.sh"} <= set(rendered)

    # The files must not depend on where the lab dir is.
    for rel, data in rendered.items():
        text = data.decode()
        for path in {str(tmp_path), str(tmp_path.resolve()), str(lab_dir)}:
            assert path not in text, f"{rel} contains the lab's location {path}"

    if updating(request.config):
        changes = update(case, rendered)
        with capsys.disabled():
            print(f"\n[golden {case}] " + ("; ".join(changes) if changes else "unchanged"))
        return

    golden_dir = GOLDEN / case
    assert golden_dir.is_dir(), f"no golden files for {case}: run pytest {__file__} --update-golden"
    golden = text_files(golden_dir)
    assert sorted(rendered) == sorted(golden), "rendered files differ from the golden set"
    diffs = [udiff(f"{case}/{rel}", golden[rel], data) for rel, data in rendered.items()
             if data != golden[rel]]
    assert not diffs, ("rendered output differs from tests/golden (intended? regenerate with "
                       "--update-golden and review):\n" + "\n".join(diffs))


def test_golden_files_hold_the_articles_topology():
    """The golden files themselves are right (a careless --update-golden would be caught)."""
    gre = (GOLDEN / "gre" / "provision" / "node1.sh").read_text()
    assert "INNER_MTU=1462" in gre
    assert "options='{remote_ip=10.10.10.2}'" in gre and "type=gre" in gre
    assert "ip -n A1 -batch" in gre and "addr replace 192.168.10.1/24 dev a1.2" in gre
    assert "addr replace 192.168.10.2/24 dev b1.2" in gre
    # Loop protection is switched on before the first loop port is added.
    assert gre.index("stp_enable=true") < gre.index("add-port br2 b12.1")
    for port, bridge in (("b12.1", "br2"), ("b12.2", "br1"), ("b13.1", "br3"), ("b13.2", "br1"),
                         ("b23.1", "br3"), ("b23.2", "br2")):
        assert re.search(rf"--may-exist add-port {bridge} {re.escape(port)}( \\)?\n", gre)
    # Bridges, ports and (802.1D: it times a port from its join) the tunnel in one
    # transaction; the veths exist before it (all spanning tree timers start together).
    gre2 = (GOLDEN / "gre" / "provision" / "node2.sh").read_text()
    for script, tunnel in ((gre, "gre-node2"), (gre2, "gre-node1")):
        txn = script[script.index("ovs-vsctl $stale \\\n  -- --may-exist add-br br1"):]
        txn = txn[:txn.index("\n\n")]
        assert all(f"add-port {b} {p}" in txn for p, b in (("b12.1", "br2"), ("b23.2", "br2")))
        assert f"-- --may-exist add-port br1 {tunnel} -- set interface {tunnel} type=gre" in txn
        assert script.count(f"add-port br1 {tunnel}") == 1
        assert script.index("| ip -batch -") < script.index("add-br br1")
    # VMs: udev runs nothing for the lab's own links (a late rule file; netns nodes own no
    # system files and get none).
    rule = next(ln for ln in gre.splitlines() if ln.startswith("udev_rule="))
    names = rule.split('KERNEL=="')[1].split('"')[0].split("|")
    assert sorted(names) == sorted(["br1", "br2", "br3", "a1.1", "a1.2", "b1.1", "b1.2", "b12.1", "b12.2",
                                    "b13.1", "b13.2", "b23.1", "b23.2"])
    assert 'RUN="/bin/true", TAG-="systemd"' in rule and "rules.d/99-zz-labgen.rules" in gre
    assert gre.index("udev_rule=") < gre.index("| ip -batch -")
    # The pinned root: node1's br1 wins the whole lab.
    assert "add-br br1 -- set bridge br1 datapath_type=\"$DATAPATH\" rstp_enable=false stp_enable=true" in gre
    assert "other_config:stp-priority=4096" in gre

    vx = (GOLDEN / "vxlan" / "provision" / "node2.sh").read_text()
    assert "INNER_MTU=1450" in vx and "rstp_enable=true" in vx
    assert re.search(r"(?<!r)stp_enable=true", vx) is None, "rstp lab must not switch classic STP on"
    assert "stp_enable=false rstp_enable=true" in vx
    assert "type=vxlan options='{remote_ip=10.10.10.1,key=5000}'" in vx
    assert "addr replace 192.168.10.10/24 dev a2.2" in vx
    assert "addr replace 192.168.10.11/24 dev b2.2" in vx
    # RSTP: node2's br1 roots its own bridges until the tunnel is up; the namespace ports are
    # edge ports, seen by RSTP without carrier (rstp/tcn) before the namespace ends come up.
    assert "other_config:rstp-priority=8192" in vx
    assert "add-port br2 a2.1 -- set port a2.1 other_config:rstp-port-admin-edge=true" in vx
    assert vx.index("add-port br2 a2.1") < vx.index("ovs-appctl rstp/tcn >") < vx.index("link set dev a2.2 mtu")
    # RSTP: every other node adds its tunnel in its bridges' transaction, before it sets its
    # underlay address; the root node adds its own last, once the others' addresses answer:
    # the root's first proposal then finds every far port already there.
    vx1 = (GOLDEN / "vxlan" / "provision" / "node1.sh").read_text()
    txn = vx[vx.index("ovs-vsctl $stale \\\n  -- --may-exist add-br br1"):]
    txn = txn[:txn.index("\n\n")]
    assert "-- --may-exist add-port br1 vxlan-node1 -- set interface vxlan-node1 type=vxlan" in txn
    assert vx.count("add-port br1 vxlan-node1") == 1
    assert vx.index("add-port br1 vxlan-node1") < vx.index('ip addr add "$UNDERLAY_CIDR" dev "$nic"') \
        < vx.index("link set dev a2.1 mtu")
    assert vx1.count("add-port br1 vxlan-node2") == 1
    assert vx1.index("link set dev a1.2 mtu") < vx1.index('ping -n -q -c 1 -i 0.05 -w 120 "$peer"') \
        < vx1.index("add-port br1 vxlan-node2")
    assert 'remotes="10.10.10.2"' in vx1 and "ping" not in vx

    tri = {k: (GOLDEN / "gre-3nodes" / "provision" / f"node{k}.sh").read_text() for k in (1, 2, 3)}
    for k, script in tri.items():
        ports = sorted(ln.split()[4] for ln in script.splitlines() if " add-port br1 gre-" in ln)
        assert ports == [f"gre-node{j}" for j in (1, 2, 3) if j != k]
    assert "addr replace 192.168.10.20/24 dev a3.2" in tri[3]
    assert "DATAPATH=netdev" in tri[1] and "Vagrantfile" not in os.listdir(GOLDEN / "gre-3nodes")
    assert "udev" not in tri[1]
    # Userspace datapath: br-phy is not waited for (the datapath is made while the veths are),
    # and gets the underlay address only after the bridges' transaction.
    t1 = tri[1]
    assert t1.index("--may-exist add-br br-phy") < t1.index("| ip -batch -") \
        < t1.index("add-br br1") < t1.index('then echo "addr add $UNDERLAY_CIDR dev br-phy"')
    assert "ovs-vsctl --no-wait ${new_nic:+set Open_vSwitch . external_ids:labgen-underlay-nic" in t1
