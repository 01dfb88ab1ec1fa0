"""End-to-end on real VMs: Vagrant + vagrant-libvirt + libvirt + qemu (software emulation
here), the locally built labgen/debian12 box, OVS's kernel datapath inside the guests,
verification over SSH. Minutes, not seconds, so every test here shares ONE booted pair of
VMs (a boot is minutes on an emulated machine; provisioning the running pair again for
another tunnel kind is seconds):

1. The CI recipe's own script (examples/ci/labgen-ci.sh, what the GitHub and GitLab recipes
   call, so the recipe cannot rot) creates the GRE lab, verifies it with a JUnit report and
   keeps it (--keep). GRE: the split across hosts, firewalld, up again, machine locks,
   failover of node2's loop links, three breakages, an iptables DROP policy.
2. The same running VMs rendered as Geneve (`labgen render geneve --force`, `labgen up`):
   verified; firewalld's rule taken away (the overlay fails, firewalld named), the other node
   switched to an iptables DROP policy, and one `labgen up` puts both right.
3. The same VMs as VXLAN with a VNI, from there (one node on firewalld, one on iptables):
   `labgen up` swaps Geneve's rule for VXLAN's in both firewalls; verified with a JUnit report.
4. Last, a crash: node2's guest powered off, `labgen up` killed with SIGKILL while node1
   provisions and Vagrant boots node2 again; the lab directory deleted; `labgen prune --yes`
   removes everything of the lab on both hosts and stops that Vagrant.
Nothing of the lab may be left on either host at the end.

This lab runs across two libvirt hosts: node1 on qemu:///system, node2 on
qemu+ssh://root@127.0.0.1/system, this machine's own libvirt reached through a real sshd on
loopback with a key made for the test. So the remote path is really exercised: libvirt over
SSH, one Vagrant project per host, the guests' SSH through the host, and the underlay as a
UDP link between the two hosts' qemu processes."""
from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import xml.etree.ElementTree as ET
from ipaddress import ip_address, ip_network
from pathlib import Path

import pytest
from support import bounds
from support import sshd as ssh_server
from support.ci import SCRIPT
from support.cli import labgen, run_group
from support.labs import listed
from support.loop import FORWARD_DELAY_MS, LOOP, loop_ends_down
from support.vm import (
    EMPTY,
    IPTABLES_DROP,
    back_to_firewalld,
    fails_at_overlay_naming,
    firewalld_rules,
    forget_tunnel_flows,
    killed_at,
    libvirt_names,
    on_node,
    root_node,
    running,
    sweep,
    vagrant_machine_locks,
)

from labgen.boxbuild.cache import boot_record, resolve_cache_dir
from labgen.lab import tunnels
from labgen.providers.libvirt.directboot import EMULATED_KERNEL_ARGS
from labgen.vagrant import command as vagrant
from labgen.verify.stages import NAMES

GRE, GENEVE, VXLAN = (tunnels.get(k) for k in ("gre", "geneve", "vxlan"))
RULE = GRE.firewalld_rule("10.10.10.0/24")
NAME = "ci-gre"         # what the recipe names its GRE lab (--name-prefix ci)

# (per test, fixture set-up included: a lab boot or a fresh root is inside)
pytestmark = [pytest.mark.vm, pytest.mark.timeout(bounds.TEST_BOOT)]


def _vm(lab, node: str, cmd: str) -> subprocess.CompletedProcess:
    return on_node(lab, node, cmd)


def _failing(proc) -> list[dict]:
    return [c for c in json.loads(proc.stdout)["checks"] if c["status"] in ("failed", "error")]


@pytest.fixture(scope="module")
def hv_b(tmp_path_factory):
    """The second libvirt host: this machine's libvirt through a real sshd on 127.0.0.1:22.
    libvirt's own ssh, told no_verify=1, records the test's host key in root's known_hosts:
    put that file (and ~/.ssh) back as they were."""
    known = Path.home() / ".ssh" / "known_hosts"
    before = known.read_bytes() if known.exists() else None
    had_dir = known.parent.exists()
    try:
        for server in ssh_server.serve(tmp_path_factory, port=22):
            yield f"qemu+ssh://root@127.0.0.1/system?keyfile={server.key}&no_verify=1"
    finally:
        if before is None:
            known.unlink(missing_ok=True)
            if not had_dir and not any(known.parent.iterdir()):
                known.parent.rmdir()
        else:
            known.write_bytes(before)


def _udp_bound(port: int) -> bool:
    return bool(subprocess.run(["ss", "-Hlun", f"sport = :{port}"], capture_output=True,
                               text=True).stdout.strip())


@pytest.fixture(scope="module")
def gre_lab(tmp_path_factory, box, hv_b):
    """ONE running two-VM lab across two libvirt hosts that every test below shares, created
    as GRE by the CI recipe's script and kept; destroyed at the end, and nothing of it may be
    left on either host. Yields (lab dir, the script's run, its reports dir)."""
    out = tmp_path_factory.mktemp("vm") / "reports"
    lab = out / ".labs" / "lab-gre"
    sweep(NAME)
    started = time.monotonic()
    proc = run_group(["bash", str(SCRIPT), "--box", box, "--no-setup", "--tunnels", "gre",
                      "--name-prefix", "ci", "--out", str(out), "--keep", "--",
                      "--host", f"node2={hv_b}"], bounds.CI_RECIPE)
    print(f"split GRE lab through the CI script: create -> verified in {time.monotonic() - started:.0f} s")
    # (a create refused before it wrote anything leaves no lab dir, no ports)
    ports = [ln["local_port"] for ln in json.loads((lab / "lab.json").read_text())["libvirt"]["links"]] \
        if (lab / "lab.json").exists() else []
    try:
        yield lab, proc, out
    finally:
        # (the last test removes the lab itself, with prune: this is for a run that stopped early)
        if (lab / "lab.json").exists():
            destroyed = labgen("destroy", str(lab), timeout=bounds.VM_DESTROY)
            assert destroyed.returncode == 0, destroyed.stderr
        assert not any(_udp_bound(p) for p in ports)     # no qemu holds a link's socket
        assert libvirt_names(f"labgen-{NAME}") == EMPTY     # (both "hosts" are this libvirtd)
        assert not list(lab.glob("**/.vagrant"))


def _as_kind(lab, box, hv_b, kind, vni: str) -> None:
    """Render the running lab's directory as another tunnel kind and provision it again:
    the same VMs, no boot."""
    rendered = labgen("render", kind, "--box", box, "--name", NAME, "--dir", str(lab), "--vni", vni,
                      "--host", f"node2={hv_b}", "--force")
    assert rendered.returncode == 0, rendered.stderr
    up = labgen("up", str(lab), timeout=bounds.VM_UP_AGAIN)
    assert up.returncode == 0, up.stderr[-3000:]
    assert "creating" not in up.stderr and "booting" not in up.stderr, up.stderr[-3000:]


def test_ci_script_creates_verifies_and_keeps_the_gre_lab(gre_lab):
    lab, proc, out = gre_lab
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "labgen-ci: gre: VERIFIED" in proc.stdout, proc.stdout[-2000:]
    assert f"labgen-ci: kept: {lab}" in proc.stdout
    suite = ET.parse(out / "labgen-gre.xml").getroot().find("testsuite")
    assert (suite.get("failures"), suite.get("errors")) == ("0", "0")
    cases = suite.findall("testcase")
    tunnel = [c for c in cases if "GRE (IP protocol 47) carrying" in c.get("name")]
    assert len(tunnel) == 2
    for c in tunnel:
        # The capture ran inside the receiving VM, on its underlay NIC (kernel datapath).
        seen = c.find("system-out").text
        assert "ICMP echo request" in seen and "GREv0" in seen, seen
    assert len([c for c in cases if c.get("classname", "").endswith(".overlay")]) == 12, \
        sorted({c.get("classname") for c in cases})
    assert {c.get("classname", "").rsplit(".", 1)[-1] for c in cases} >= set(NAMES)
    log = (out / "create-gre.log").read_text()
    assert "node1: SSH ready" in log and "node2: provisioning" in log


def test_the_split_lab_runs_one_project_per_host_joined_by_udp(gre_lab, hv_b):
    lab, proc, _ = gre_lab
    assert proc.returncode == 0
    hosts = json.loads((lab / "lab.json").read_text())["libvirt"]["hosts"]
    assert [(h["uri"], h["nodes"]) for h in hosts] == [("qemu:///system", ["node1"]), (hv_b, ["node2"])]
    assert (lab / "hosts/local/.vagrant").is_dir() and (lab / "hosts/127.0.0.1/.vagrant").is_dir()
    for node in ("node1", "node2"):
        # Each guest's underlay NIC is a UDP socket of its qemu, not a libvirt network.
        ifaces = subprocess.run(["virsh", "-c", "qemu:///system", "domiflist", f"labgen-{NAME}-{node}"],
                                capture_output=True, text=True).stdout
        assert [ln.split()[1] for ln in ifaces.splitlines()[2:] if ln.split()] == ["network", "udp"], ifaces
        # The node script set the underlay MTU that leaves room for the link's 42 bytes.
        assert "mtu 1458" in on_node(lab, node, "ip link show eth1").stdout
    # node2 was reached over the remote host's SSH: vagrant ssh-config names the proxy.
    assert "ProxyCommand" in (lab / "hosts/127.0.0.1/.vagrant/labgen-ssh-config").read_text()


def test_the_local_node_boots_the_box_kernel_directly_the_remote_one_through_grub(gre_lab, box):
    """Direct kernel boot (labgen/providers/libvirt/directboot.py): node1, on this host's
    libvirt, runs the kernel and initramfs `labgen box build` kept, with the box version they
    belong to; node2, on the other host, boots the same box through the BIOS and GRUB."""
    lab, proc, _ = gre_lab
    assert proc.returncode == 0
    record = json.loads(boot_record(resolve_cache_dir(), box).read_text())
    xml = {node: ET.fromstring(subprocess.run(
        ["virsh", "-c", "qemu:///system", "dumpxml", f"labgen-{NAME}-{node}"],
        capture_output=True, text=True, check=True).stdout) for node in ("node1", "node2")}
    # Under software emulation (the qemu driver) labgen adds its kernel arguments to the
    # box's and gives both guests QEMU's qemu64 CPU (the box file's emulated_cpu).
    emulated = json.loads((lab / "lab.json").read_text())["libvirt"]["driver"] == "qemu"
    # Last, the tunnel's firewall rule for the box's firewalld (labgen/boxbuild/guest.py).
    direct = " ".join([record["cmdline"], *(EMULATED_KERNEL_ARGS if emulated else ()),
                       f"labgen.firewalld-rule={GRE.boot_rule('10.10.10.0/24')}"])
    assert xml["node1"].findtext("os/kernel") == record["kernel"]
    assert xml["node1"].findtext("os/initrd") == record["initrd"]
    assert xml["node1"].findtext("os/cmdline") == direct
    # The box's kernel, uncompressed, entered through its PVH note (labgen/boxbuild/kernelimage.py):
    # the same kernel release as GRUB's bzImage on node2.
    assert record["kernel"].endswith(".vmlinux") and open(record["kernel"], "rb").read(4) == b"\x7fELF"
    release = {node: on_node(lab, node, "uname -r").stdout.strip() for node in xml}
    assert release["node1"] == release["node2"] != ""
    for node in xml:
        assert (xml[node].findtext("cpu/model") == "qemu64") == emulated, node
        # no USB controller, no memory balloon (the Vagrantfile)
        assert [c.get("model") for c in xml[node].findall("devices/controller[@type='usb']")] in ([], ["none"]), node
        assert xml[node].find("devices/memballoon").get("model") == "none", node
    assert xml["node2"].find("os/kernel") is None
    assert f"config.vm.box_version = '{record['version']}'" in (lab / "hosts/local/Vagrantfile").read_text()
    assert "box_version" not in (lab / "hosts/127.0.0.1/Vagrantfile").read_text()
    # The same kernel command line (the box's root file system), given by libvirt to node1
    # and by GRUB, which adds the image's name, to node2.
    cmdline = {node: on_node(lab, node, "cat /proc/cmdline").stdout.strip() for node in xml}
    assert cmdline["node1"] == direct
    assert cmdline["node2"].startswith("BOOT_IMAGE=/boot/vmlinuz-")
    assert cmdline["node2"].endswith(" " + record["cmdline"])


def test_the_nodes_lease_their_address_on_the_labs_own_management_network(gre_lab):
    """labgen/providers/libvirt/management.py: each node's first NIC is on labgen-NAME.mgmt (both
    "hosts" are this libvirtd: one network), whose dnsmasq offers without a ping check, and its
    address is in the subnet lab.json holds, not on vagrant-libvirt's shared network."""
    lab, proc, _ = gre_lab
    assert proc.returncode == 0
    subnet = ip_network(json.loads((lab / "lab.json").read_text())["libvirt"]["management"])
    net = ET.fromstring(subprocess.run(["virsh", "-c", "qemu:///system", "net-dumpxml", f"labgen-{NAME}.mgmt"],
                                       capture_output=True, text=True, check=True).stdout)
    ip = net.find("ip")
    assert ip_network(f"{ip.get('address')}/{ip.get('netmask')}", strict=False) == subnet
    assert [o.get("value") for o in net.iter("{http://libvirt.org/schemas/network/dnsmasq/1.0}option")] == ["no-ping"]
    for node in ("node1", "node2"):
        dom = ET.fromstring(subprocess.run(["virsh", "-c", "qemu:///system", "dumpxml", f"labgen-{NAME}-{node}"],
                                           capture_output=True, text=True, check=True).stdout)
        first = dom.find("devices/interface/source")
        assert first is not None and first.get("network") == f"labgen-{NAME}.mgmt", node
        out = on_node(lab, node, "ip -4 -o addr show dev eth0").stdout.split()
        assert ip_address(out[out.index("inet") + 1].split("/")[0]) in subnet, out


def test_split_lab_pre_checks_refuse_in_one_line_and_create_nothing(tmp_path, box, hv_b):
    """Before anything is created: a host whose SSH refuses the key, a link port that is taken."""
    bad_key = hv_b.replace("keyfile=", "keyfile=/nonexistent")
    proc = labgen("create", "gre", "--box", box, "--name", "refused", "--dir", str(tmp_path / "a"),
                  "--host", f"node2={bad_key}")
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "libvirt host 127.0.0.1 does not answer over SSH" in lines[0], proc.stderr
    render = labgen("render", "gre", "--box", box, "--name", "refused", "--dir", str(tmp_path / "b"),
                    "--host", f"node2={hv_b}")
    port = json.loads((tmp_path / "b/lab.json").read_text())["libvirt"]["links"][0]["local_port"]
    assert render.returncode == 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", port))
        proc = labgen("create", "gre", "--box", box, "--name", "refused", "--dir", str(tmp_path / "c"),
                      "--host", f"node2={hv_b}")
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and f"UDP port {port} on local (127.0.0.1), node1's underlay link, is taken" in lines[0]
    assert not (tmp_path / "a").exists() and not (tmp_path / "c").exists()
    assert libvirt_names("labgen-refused-") == EMPTY


def test_firewalld_is_active_and_admits_only_the_tunnel_from_the_underlay(gre_lab):
    """The box runs firewalld like CentOS; the node script added one rich rule (runtime and
    permanent) and opened nothing else."""
    lab, created, out = gre_lab
    assert created.returncode == 0, "the shared lab was not created: see the first test"
    for node in ("node1", "node2"):
        assert firewalld_rules(lab, node) == {"state": "running", "rich": RULE, "ports": "",
                                              "protocols": "", "permanent": RULE}
    # Two ways to the same firewalld: node1, booted directly with the rule on its kernel
    # command line, had it in its default zone from the boot (the node script's first run took
    # the box's mark and asked firewalld nothing); node2, booted through GRUB on the other
    # host, had it added over firewalld's D-Bus interface.
    taken = {node: _vm(lab, node, "ls /run/labgen 2>/dev/null").stdout.split() for node in ("node1", "node2")}
    assert taken == {"node1": ["firewalld-rule.taken"], "node2": []}
    # ... as the create said, each node script's steps shown as they came
    log = (out / "create-gre.log").read_text()
    assert "node1: firewalld: admits GRE (IP protocol 47) from 10.10.10.0/24 (in its default zone since the boot)" in log
    assert "node2: firewalld: admitted GRE (IP protocol 47) from 10.10.10.0/24" in log
    assert "node2: firewall: waiting for firewalld's start" in log and "node1: firewall:" not in log


def test_up_again_on_running_vms_changes_nothing(gre_lab):
    """A second `labgen up` on a running lab (the netlab lesson) provisions again and changes nothing."""
    lab, created, _ = gre_lab
    assert created.returncode == 0, "the shared lab was not created: see the first test"

    def state() -> str:
        # (lifetimes cut: the DHCP lease on the management NIC counts down)
        cmd = "{ sudo ovs-vsctl show; sudo ip -all netns exec ip -o addr; ip -o addr; } | sed 's/valid_lft.*//'"
        return "".join(_vm(lab, n, cmd).stdout for n in ("node1", "node2"))
    before = state()
    again = labgen("up", str(lab), timeout=bounds.VM_UP_AGAIN)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "node1: provisioned" in again.stderr and "creating" not in again.stderr
    assert state() == before
    status = labgen("status", str(lab), "--json")
    assert status.returncode == 0 and {s["stp"] for s in json.loads(status.stdout)} == {"converged"}


def test_labgen_reaches_the_nodes_while_vagrant_holds_their_machine_locks(gre_lab):
    """A CI run lost a lab to this: `vagrant up` failed with "Vagrant can't use the requested
    machine because it is locked", because labgen's `vagrant ssh-config`, asked while the
    guests boot, held a machine's lock in Vagrant's machine index just when `up` read that
    machine's state (both take it without waiting). Here the locks are held as Vagrant holds
    them: Vagrant itself is refused, and labgen, whose ssh-config must take none of them,
    still finds and reaches both nodes (its cached ssh-config removed first)."""
    lab, created, _ = gre_lab
    assert created.returncode == 0, "the shared lab was not created: see the first test"
    for cache in lab.glob("**/.vagrant/labgen-ssh-config"):
        cache.unlink()
    with vagrant_machine_locks(lab) as held:
        assert held == 2
        refused = vagrant.run(["status"], cwd=lab / "hosts" / "local", timeout=300)
        assert refused.returncode != 0 and "locked" in refused.stderr, refused.stderr
        for node in ("node1", "node2"):
            proc = _vm(lab, node, "hostname")
            assert proc.returncode == 0 and proc.stdout.strip() == node, proc.stderr


def test_failover_on_the_vms_heals_each_cut_of_node2s_loop(gre_lab):
    """`labgen failover` on the VMs: node2's three loop links cut in turn (both veth ends down,
    over SSH) under the probe stream, each cut and each restore healed, the spanning tree
    judged after each with the verify stage's judge; the lab left as found."""
    lab, created, _ = gre_lab
    assert created.returncode == 0, "the shared lab was not created: see the first test"
    proc = labgen("failover", str(lab), *(a for p in LOOP for a in ("--link", f"node2:{p}")),
                  "--json", timeout=bounds.VM_FAILOVER)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    fo = json.loads(proc.stdout)
    assert fo["passed"] is True and fo["provider"] == "libvirt" and fo["mode"] == "stp", fo
    cut = [ln for ln in fo["links"] if ln["cut"]]
    assert [(ln["node"], ln["link"]) for ln in cut] == [("node2", p) for p in LOOP], cut
    assert all(ln["tree_after_cut"] == ln["tree_after_restore"] == "passed" for ln in cut), cut
    crossing = [ln for ln in cut if ln["probe"]["crosses"]]
    assert len(crossing) == 2, cut       # of a node's three loop links, one is blocked
    for ln in crossing:
        assert ln["took_over"] and ln["cut_outage_ms"] > FORWARD_DELAY_MS, ln
    assert loop_ends_down(_vm(lab, "node2", "ip -o link").stdout) == []
    status = labgen("status", str(lab), "--json")
    assert status.returncode == 0 and {s["stp"] for s in json.loads(status.stdout)} == {"converged"}


def test_firewall_dropping_tunnelled_pings_fails_the_overlay(gre_lab):
    """A filter in node2 drops GRE packets that carry ICMP (inner IP protocol at byte 47 of
    the outer packet): spanning tree still crosses, the cross-node pings do not."""
    lab, created, _ = gre_lab
    assert created.returncode == 0, "the shared lab was not created: see the first test"
    drop = ("sudo tc qdisc add dev eth1 ingress && sudo tc filter add dev eth1 parent ffff: protocol ip "
            "prio 1 u32 match ip protocol 47 0xff match u8 1 0xff at 47 action drop")
    assert _vm(lab, "node2", drop).returncode == 0
    try:
        proc = labgen("verify", str(lab), "--json", timeout=bounds.VM_VERIFY)
        assert proc.returncode == 1, proc.stdout[-3000:]
        bad = _failing(proc)
        assert {c["stage"] for c in bad} == {"overlay"}, bad
        assert all("across" in c["name"] for c in bad)
        assert all(c["evidence"].startswith("no reply") for c in bad), bad
    finally:
        _vm(lab, "node2", "sudo tc qdisc del dev eth1 ingress")
    assert labgen("verify", str(lab), timeout=bounds.VM_VERIFY).returncode == 0


def test_namespace_mtu_black_hole_fails_the_mtu_stage_then_up_repairs(gre_lab):
    lab, created, _ = gre_lab
    assert created.returncode == 0, "the shared lab was not created: see the first test"
    assert _vm(lab, "node2", "sudo ip link set a2.1 mtu 1500 && sudo ip netns exec A2 ip link set a2.2 mtu 1500").returncode == 0
    proc = labgen("verify", str(lab), "--json", timeout=bounds.VM_VERIFY)
    assert proc.returncode == 1, proc.stdout[-3000:]
    bad = _failing(proc)
    assert {c["stage"] for c in bad} == {"mtu"}, bad
    names = {c["name"]: c["evidence"] for c in bad if c["node"] == "node2"}
    inner = json.loads((lab / "lab.json").read_text())["inner_mtu"]     # 1458 - 38 across hosts
    assert "a2.2 in A2 mtu 1500" in names[f"no overlay interface above the inner MTU {inner}"]
    assert "black hole" in names[f"A2 -> A1: DF ping, {inner - 28 + 1} B payload refused"]
    assert labgen("up", str(lab), timeout=bounds.VM_UP_AGAIN).returncode == 0
    assert labgen("verify", str(lab), timeout=bounds.VM_VERIFY).returncode == 0


# The firewalld breakage runs on the Geneve round (below), not on GRE: firewalld is
# stateful, and GRE has no ports, so GRE from the peer is a reply to this node's own GRE to it
# (its BPDUs): a missing firewalld rule for GRE goes unnoticed while both ends send. The
# iptables policy below has no ESTABLISHED rule, so it stops GRE whatever the node sent.


def test_iptables_drop_policy_fails_then_up_admits_only_the_tunnel(gre_lab):
    """firewalld on one node, an iptables INPUT policy of DROP on the other (the root's): no
    rule -> the overlay fails, named; labgen up inserts the rule -> VERIFIED."""
    lab, created, _ = gre_lab
    assert created.returncode == 0, "the shared lab was not created: see the first test"
    node = root_node(lab)
    assert on_node(lab, node, IPTABLES_DROP).returncode == 0
    proc = labgen("verify", str(lab), "--json", timeout=bounds.VM_VERIFY)
    fails_at_overlay_naming(proc, node, "iptables", GRE)
    assert labgen("up", str(lab), timeout=bounds.VM_UP_AGAIN).returncode == 0
    rules = on_node(lab, node, "iptables -S INPUT").stdout.splitlines()
    assert rules[:2] == ["-P INPUT DROP", "-A INPUT -s 10.10.10.0/24 -p gre -j ACCEPT"], rules
    assert on_node(lab, node, "firewall-cmd --state").returncode != 0     # still iptables
    proc = labgen("verify", str(lab), "--json", timeout=bounds.VM_VERIFY)
    assert proc.returncode == 0, proc.stdout[-3000:]


def _firewalld_on_both(lab) -> None:
    """The GRE and Geneve rounds end with a node on an iptables DROP policy: firewalld back."""
    for node in ("node1", "node2"):
        if on_node(lab, node, "systemctl is-active firewalld").stdout.strip() != "active":
            back_to_firewalld(lab, node)


def _firewall(lab, node: str) -> str:
    return "firewalld" if on_node(lab, node, "systemctl is-active firewalld").stdout.strip() == "active" \
        else "iptables"


def _iptables_rules(lab, node: str, kind) -> None:
    """node's INPUT chain: the DROP policy, the tunnel's rule first, no other kind's rule."""
    rules = on_node(lab, node, "iptables -S INPUT").stdout.splitlines()
    match = f"-p udp -m udp --dport {kind.udp_port}" if kind.udp_port else f"-p {kind.name}"
    assert rules[:2] == ["-P INPUT DROP", f"-A INPUT -s 10.10.10.0/24 {match} -j ACCEPT"], rules
    others = [r for r in rules if "10.10.10.0/24" in r and match not in r]
    assert others == [], rules


def test_the_running_vms_as_geneve_verify_then_one_up_mends_firewalld_and_iptables(gre_lab, box, hv_b):
    """Geneve on the same VMs: the same stages, the capture proof seeing Geneve-encapsulated
    echo requests with the lab's VNI, the inner MTU from Geneve's overhead proven by the MTU
    stage; firewalld on both nodes (the box's default) admits exactly Geneve's rule (GRE's
    went); its rule taken away on one node (the overlay fails, firewalld named), the other node
    switched to an iptables DROP policy, and one `labgen up` puts both right."""
    lab, created, _ = gre_lab
    assert created.returncode == 0, "the shared lab was not created: see the first test"
    _firewalld_on_both(lab)
    _as_kind(lab, box, hv_b, "geneve", "5000")
    proc = labgen("verify", str(lab), "--json", timeout=bounds.VM_VERIFY)
    assert proc.returncode == 0, proc.stdout[-4000:]
    result = json.loads(proc.stdout)
    assert {s["name"]: s["status"] for s in result["stages"]} == {n: "passed" for n in NAMES}
    tunnel = [c for c in result["checks"] if c["stage"] == "tunnel"]
    assert len(tunnel) == 2
    for c in tunnel:
        assert c["name"].startswith("Geneve (UDP 6081) carrying"), c["name"]
        assert "6081: Geneve" in c["evidence"] and "vni 0x1388" in c["evidence"], c["evidence"]
    underlay = json.loads((lab / "lab.json").read_text())["underlay_mtu"]     # 1458 across hosts
    mtu = {c["name"] for c in result["checks"] if c["stage"] == "mtu"}
    assert f"underlay carries {underlay} B (inner MTU + tunnel overhead)" in mtu, mtu
    assert any(n.endswith(f"DF ping, {underlay - GENEVE.overhead(True) - 28} B payload crosses") for n in mtu)
    rule = GENEVE.firewalld_rule("10.10.10.0/24")
    for node in ("node1", "node2"):
        assert firewalld_rules(lab, node) == {"state": "running", "rich": rule, "ports": "",
                                              "protocols": "", "permanent": rule}

    # A UDP tunnel's packets from the peer are never replies to this node's own (other
    # source port), so firewalld's default zone rejects them without the rule. Taken off
    # the node holding the spanning-tree root: it needs no BPDUs from the peer, so only
    # data stops and the overlay stage is what fails.
    node = root_node(lab)
    other = "node2" if node == "node1" else "node1"
    assert on_node(lab, node, f"firewall-cmd --remove-rich-rule='{rule}'").returncode == 0
    forget_tunnel_flows(lab, node, GENEVE)
    fails_at_overlay_naming(labgen("verify", str(lab), "--json", timeout=bounds.VM_VERIFY), node, "firewalld", GENEVE)
    # (the file holds the probe's command too: the verdict is the output line of its own)
    assert "firewalld blocks" in (lab / "diagnostics" / f"{node}.txt").read_text().splitlines()

    # The rule still off here, the other node on an iptables DROP policy: one up mends both.
    assert on_node(lab, other, IPTABLES_DROP).returncode == 0
    assert labgen("up", str(lab), timeout=bounds.VM_UP_AGAIN).returncode == 0
    assert firewalld_rules(lab, node) == {"state": "running", "rich": rule, "ports": "",
                                          "protocols": "", "permanent": rule}
    _iptables_rules(lab, other, GENEVE)
    again = labgen("verify", str(lab), "--json", timeout=bounds.VM_VERIFY)
    assert again.returncode == 0, again.stdout[-3000:]


def test_the_running_vms_as_vxlan_through_firewalld_and_iptables_verify_with_a_junit_report(gre_lab, box, hv_b):
    """VXLAN with a VNI on the same VMs, one node on firewalld and one on an iptables DROP
    policy (as the Geneve round leaves them): `labgen up` swaps Geneve's rule for VXLAN's in
    both firewalls, and the lab verifies through them with a JUnit report."""
    lab, created, _ = gre_lab
    assert created.returncode == 0, "the shared lab was not created: see the first test"
    walls = {n: _firewall(lab, n) for n in ("node1", "node2")}
    if "iptables" not in walls.values():        # (the Geneve round stopped early)
        assert on_node(lab, "node2", IPTABLES_DROP).returncode == 0
    elif "firewalld" not in walls.values():
        back_to_firewalld(lab, "node1")
    walls = {n: _firewall(lab, n) for n in ("node1", "node2")}
    _as_kind(lab, box, hv_b, "vxlan", "4242")
    junit = lab.parent / "vxlan.xml"
    proc = labgen("verify", str(lab), "--junit", str(junit), timeout=bounds.VM_VERIFY)
    assert proc.returncode == 0, proc.stdout[-4000:]
    suite = ET.parse(junit).getroot().find("testsuite")
    assert (suite.get("failures"), suite.get("errors")) == ("0", "0")
    cases = {c.get("name"): c for c in suite.findall("testcase")}
    tunnel = [c for n, c in cases.items() if "VXLAN (UDP 4789) carrying" in n]
    assert len(tunnel) == 2
    for c in tunnel:
        seen = c.find("system-out").text
        assert "ICMP echo request" in seen and "vni 4242" in seen, seen
    assert sum("VNI" in n for n in cases) == 2
    rule = VXLAN.firewalld_rule("10.10.10.0/24")
    for node, wall in walls.items():
        if wall == "firewalld":
            assert firewalld_rules(lab, node) == {"state": "running", "rich": rule, "ports": "",
                                                  "protocols": "", "permanent": rule}
        else:
            _iptables_rules(lab, node, VXLAN)


def test_up_killed_while_a_node_provisions_leaves_a_partial_lab_that_prune_removes(gre_lab):
    """The shared pair's end. node2's guest powered off (as a crashed guest is), `labgen up`
    boots it again; labgen alone is killed with SIGKILL when node1 provisions, while Vagrant
    still boots node2 (it goes on by itself, as when a CI job's main process dies). `labgen
    list` shows the lab as partial; with its directory deleted, orphaned; `labgen prune --yes`
    removes it from both hosts and stops that Vagrant."""
    lab, created, _ = gre_lab
    assert created.returncode == 0, "the shared lab was not created: see the first test"
    off = subprocess.run(["virsh", "-c", "qemu:///system", "destroy", f"labgen-{NAME}-node2"],
                         capture_output=True, text=True, timeout=120)
    assert off.returncode == 0, off.stderr
    vagrants = killed_at(NAME, "node1: provisioning", "up", str(lab))
    entry = listed(NAME, "libvirt")
    assert entry is not None and entry["state"] == "partial" and entry["dir"] == str(lab), entry
    shutil.rmtree(lab)
    assert listed(NAME, "libvirt")["state"] == "orphaned"
    done = labgen("prune", "--yes", timeout=bounds.VM_DESTROY)
    assert done.returncode == 0, done.stdout + done.stderr
    assert listed(NAME, "libvirt") is None
    assert libvirt_names(f"labgen-{NAME}") == EMPTY
    assert not running(vagrants)


@pytest.mark.parametrize("net_name,ip,name,fragment", [
    ("labgen-clash", "10.99.0.1", "clash", "libvirt network labgen-clash already exists and is not this lab's"),
    ("someone-else", "10.10.10.254", "free", "libvirt network someone-else already uses the underlay"),
    # the lab's own management network (labgen/providers/libvirt/management.py): its name, its subnet
    ("labgen-clash.mgmt", "10.99.1.1", "clash", "libvirt network labgen-clash.mgmt already exists and is not this lab's"),
    ("someone-else", "198.18.57.1", "free",
     "libvirt network someone-else already uses 198.18.57.0/27, the management subnet of lab free"),
])
def test_libvirt_names_and_subnets_taken_by_others_are_refused(tmp_path, box, net_name, ip, name, fragment):
    sweep(name)
    xml = tmp_path / "net.xml"
    xml.write_text(f"<network><name>{net_name}</name><ip address='{ip}' netmask='255.255.255.0'/></network>")
    virsh = ["virsh", "-c", "qemu:///system"]
    subprocess.run([*virsh, "net-define", str(xml)], check=True, capture_output=True)
    try:
        d = tmp_path / "lab"
        proc = labgen("create", "gre", "--box", box, "--name", name, "--dir", str(d))
        assert proc.returncode == 2, proc.stderr
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and fragment in lines[0], proc.stderr
        assert not d.exists()
        assert libvirt_names(f"labgen-{name}-")["domains"] == []
    finally:
        subprocess.run([*virsh, "net-undefine", net_name], capture_output=True)
