"""Failover on live netns labs (real OVS, real namespaces, real cuts): every redundant loop
link cut under a probe stream and restored, with RSTP and with 802.1D's tuned timers; and
failover shown failing for the right reason: spanning tree off on a bridge (the loop is
reported, nothing is cut), a link that takes over but is pinned down by an OpenFlow drop rule
(named), an outage above --max-outage (exit 1 naming the link). The lab is left as found:
after a failure and after Ctrl-C every cut link is up again and the lab verifies."""
from __future__ import annotations

import json
import os
import select
import signal
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from support.cli import labgen, labgen_started
from support.loop import FORWARD_DELAY_MS, LOOP, loop_ends_down
from support.netns import netns_lab, node_cmd

from labgen.errors import ExitCode

pytestmark = pytest.mark.netns

def loop_links_up(lab: str) -> dict[str, list[str]]:
    """Per node, the loop veth ends that are not up (admin and carrier): [] when all are."""
    return {node: loop_ends_down(node_cmd(lab, node, "ip -o link").stdout) for node in ("node1", "node2")}


def no_probe_left(lab: str) -> list[str]:
    """The lab's probe streams' work dirs left behind (probes.py makes one per stream in
    /tmp, named for the lab)."""
    return sorted(str(p) for p in Path("/tmp").glob(f"labgen-probe.{lab}.*"))


def verified(d: Path) -> None:
    proc = labgen("verify", str(d), "--json")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr


# ---- RSTP: create --failover, then the lab's faults --------------------------------------
@pytest.fixture(scope="module")
def rstp(tmp_path_factory):
    """A GRE RSTP lab made with `create --failover`: (its dir, that create's result, JUnit)."""
    junit = tmp_path_factory.mktemp("fo-rstp-junit") / "junit.xml"
    for d, proc in netns_lab(tmp_path_factory, "gre", "fo-rstp", "--stp", "rstp", "--failover", "--json",
                             "--junit", str(junit), timeout=600, check=False):
        yield d, proc, junit


def test_rstp_create_failover_cuts_every_loop_link_and_each_heals(rstp):
    d, proc, junit = rstp
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    assert result["passed"] is True                 # the verification, as before
    fo = result["failover"]
    assert fo["passed"] is True and fo["mode"] == "rstp" and fo["probe_interval_ms"] == 10
    cut = [ln for ln in fo["links"] if ln["cut"]]
    assert sorted((ln["node"], ln["link"]) for ln in cut) == [(n, p) for n in ("node1", "node2") for p in LOOP]
    for ln in cut:
        assert ln["tree_after_cut"] == "passed" and ln["tree_after_restore"] == "passed", ln
        assert ln["cut_outage_ms"] is not None and ln["restore_outage_ms"] is not None, ln
        assert ln["lost_probes"] == ln["lost_on_cut"] + ln["lost_on_restore"]
        assert ln["probe"]["from"] in (("A1", "B1") if ln["node"] == "node1" else ("A2", "B2"))
        # A link that carried the probes is replaced by the blocked one; a blocked link is on
        # no path and nothing takes over from it.
        assert bool(ln["took_over"]) == ln["probe"]["crosses"], ln
    # Per node, two links forward and one blocks: the tree of 6 bridges has 5 links.
    for node in ("node1", "node2"):
        assert sum(ln["probe"]["crosses"] for ln in cut if ln["node"] == node) == 2
    spof = {(ln["node"], ln["link"]) for ln in fo["links"] if ln["spof"]}
    assert spof == {("node1", "a1"), ("node1", "b1"), ("node2", "a2"), ("node2", "b2"), ("node1", "gre-node2")}
    assert all(not ln["cut"] for ln in fo["links"] if ln["spof"])
    suites = ET.parse(junit).getroot().findall("testsuite")
    assert [s.get("name") for s in suites] == ["labgen.fo-rstp", "labgen.fo-rstp.failover"]
    assert suites[1].get("failures") == "0" and suites[1].get("skipped") == "5"
    assert loop_links_up("fo-rstp") == {"node1": [], "node2": []}
    assert no_probe_left("fo-rstp") == []
    verified(d)


def test_spanning_tree_off_on_a_bridge_is_reported_as_the_loop_and_nothing_is_cut(rstp):
    d, _, _ = rstp
    node_cmd("fo-rstp", "node1", "ovs-vsctl set bridge br2 rstp_enable=false")
    try:
        # The storm lasts while RSTP is off: failover judges the tree first and stops there
        # (no probe stream, no cut), so this run is one poll of the tree.
        proc = labgen("failover", str(d), "--json", timeout=120)
        assert proc.returncode == ExitCode.FAILED, proc.stdout[-3000:] + proc.stderr
        fo = json.loads(proc.stdout)
        assert fo["passed"] is False and fo["tree_before"]["status"] == "failed"
        evidence = fo["tree_before"]["evidence"]
        # The judge of the stp stage names the bridge that lets a loop through (and the loop
        # itself, "loop: ...", when the other bridges' ports close it: that depends on which
        # of their ports RSTP blocked).
        assert "node1 br2 runs no RSTP: it forwards on every port, nothing stops a loop through it" \
            in evidence, evidence
        assert not any(ln["cut"] for ln in fo["links"])
        assert all("did not hold before any cut" in ln["note"] for ln in fo["links"] if not ln["spof"])
        assert "the spanning tree did not hold before any cut" in proc.stderr
        assert no_probe_left("fo-rstp") == []
    finally:
        node_cmd("fo-rstp", "node1", "ovs-vsctl set bridge br2 rstp_enable=true")
    assert loop_links_up("fo-rstp") == {"node1": [], "node2": []}
    verified(d)


def test_a_link_that_takes_over_but_is_pinned_down_by_a_drop_rule_is_named(rstp):
    d, create, _ = rstp
    fo = json.loads(create.stdout)["failover"]
    # From create's own run: a link of node1 whose cut another link took over from.
    victim = next(ln for ln in fo["links"] if ln["node"] == "node1" and ln["cut"] and ln["took_over"])
    port = victim["took_over_ports"][0]
    pinned = port["port"].rsplit(".", 1)[0]         # the veth pair that took over, e.g. b23
    # Both ends of it drop everything that arrives (STP's BPDUs are handled before the flow
    # table: the link stays in the tree, up, and carries nothing).
    ends = {f"{pinned}.1": None, f"{pinned}.2": None}
    ports = node_cmd("fo-rstp", "node1", "for b in br1 br2 br3; do echo $b: $(ovs-vsctl list-ports $b); done").stdout
    for line in ports.splitlines():
        bridge, names = line.split(":", 1)
        for end in ends:
            if end in names.split():
                ends[end] = bridge
    flows = [(bridge, f"priority=100,in_port={end}") for end, bridge in ends.items()]
    for bridge, match in flows:
        node_cmd("fo-rstp", "node1", f"ovs-ofctl add-flow {bridge} {match},actions=drop")
    try:
        proc = labgen("failover", str(d), "--link", f"node1:{victim['link']}", "--json",
                      "--timeout", "10", timeout=300)
        assert proc.returncode == ExitCode.FAILED, proc.stdout[-3000:] + proc.stderr
        (ln,) = json.loads(proc.stdout)["links"]
        assert ln["passed"] is False and ln["tree_after_cut"] == "passed", proc.stdout
        assert ln["probe"]["crosses"] and ln["cut_outage_ms"] is None, proc.stdout
        problem = ln["problems"][0]
        assert f"node1:{pinned} (node1 {port['port']} on {port['bridge']}) took over in the " \
               "spanning tree but carries nothing" in problem, problem
    finally:
        for bridge, match in flows:
            node_cmd("fo-rstp", "node1", f"ovs-ofctl --strict del-flows {bridge} {match}", check=False)
    # The failed run left the lab as it found it: every cut link up again.
    assert loop_links_up("fo-rstp") == {"node1": [], "node2": []}
    assert no_probe_left("fo-rstp") == []
    verified(d)


# ---- 802.1D with the tuned timers ---------------------------------------------------------
@pytest.fixture(scope="module")
def stp(tmp_path_factory):
    for d, _ in netns_lab(tmp_path_factory, "vxlan", "fo-stp", "--stp", "stp", timeout=300):
        yield d


def test_tuned_stp_failover_heals_after_802_1d_forward_delays(stp):
    proc = labgen("failover", str(stp), *(a for p in LOOP for a in ("--link", f"node2:{p}")),
                  "--json", timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    fo = json.loads(proc.stdout)
    assert fo["passed"] is True and fo["mode"] == "stp" and fo["stp_timers"] == "tuned"
    cut = [ln for ln in fo["links"] if ln["cut"]]
    assert [ln["link"] for ln in cut] == list(LOOP)
    assert all(ln["tree_after_cut"] == ln["tree_after_restore"] == "passed" for ln in cut)
    crossing = [ln for ln in cut if ln["probe"]["crosses"]]
    assert len(crossing) == 2
    for ln in crossing:
        assert ln["took_over"], ln
        assert ln["cut_outage_ms"] > FORWARD_DELAY_MS, ln
        # (how many: ping sends fewer than one per 10 ms while its probes fail, by load)
        assert ln["lost_on_cut"] > 0, ln
    assert loop_links_up("fo-stp") == {"node1": [], "node2": []}
    verified(stp)


def test_an_outage_above_max_outage_exits_1_naming_the_link(stp):
    # Of node1's b12 and b13 at least one carries the probes (a node's loop blocks one link):
    # its cut stops traffic for two forward delays, far above 1 s.
    proc = labgen("failover", str(stp), "--link", "node1:b12", "--link", "node1:b13",
                  "--max-outage", "1", timeout=600)
    assert proc.returncode == ExitCode.FAILED, proc.stdout[-3000:] + proc.stderr
    assert "FAILOVER NOT PROVEN" in proc.stdout
    named = [p for p in ("b12", "b13") if f"node1:{p} (node1 {p}.1" in proc.stdout]
    assert named, proc.stdout
    assert "is above --max-outage 1000 ms" in proc.stdout
    assert "Traceback" not in proc.stderr
    assert loop_links_up("fo-stp") == {"node1": [], "node2": []}


def started_until_cut(d: Path, *links: str) -> tuple[object, str, str]:
    """Start `labgen failover d --link ...` and read its stderr until it has cut a link that
    carries the probes: (the process, that link, what it printed so far)."""
    proc = labgen_started("failover", str(d), *(a for ln in links for a in ("--link", ln)), text=True)
    seen, link = "", None
    assert proc.stderr is not None
    fd = proc.stderr.fileno()
    while link is None or f"{link}: cut (" not in seen:
        ready, _, _ = select.select([fd], [], [], 120)
        assert ready, f"no cut of a link that carries the probes within 120 s: {seen[-2000:]}"
        chunk = os.read(fd, 65536).decode(errors="replace")
        assert chunk, f"failover ended before it cut a link that carries the probes: {seen[-2000:]}"
        seen += chunk
        for line in seen.splitlines():
            if ": probing " in line and "(crosses)" in line and link is None:
                link = line.split(": probing ")[0].split()[-1]
    return proc, link, seen


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_interrupted_while_a_link_is_cut_restores_it(stp, sig):
    """Interrupted (Ctrl-C, or SIGTERM as a CI job's timeout sends it) right after it cut a
    link that carried the probes: 802.1D keeps that link's replacement in listening and
    learning for two forward delays, so the signal lands while the link is down, whatever
    the machine's speed."""
    proc, link, seen = started_until_cut(stp, "node1:b12", "node1:b13")
    after_cut = seen.split(f"{link}: cut (")[1]
    assert f"{link}: restored" not in after_cut
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == ExitCode.INTERRUPTED, seen + err
    assert f"{link}: restored" in after_cut + err, seen + err
    assert "interrupted: every link that was cut is up again" in err
    assert loop_links_up("fo-stp") == {"node1": [], "node2": []}
    assert no_probe_left("fo-stp") == []
    verified(stp)


def test_killed_while_a_link_is_cut_the_next_failover_restores_it_first(stp):
    """SIGKILL (nothing can catch it) to failover's whole process group while a veth link
    is down: the link stays down and the probe stream runs on, marked on the node; the next
    failover brings that link up, stops that stream, says so, and then measures as usual."""
    proc, link, seen = started_until_cut(stp, "node1:b12", "node1:b13")
    os.killpg(proc.pid, signal.SIGKILL)    # its group only: what it started on the nodes lives on
    proc.communicate(timeout=60)
    port = link.split(":")[1]
    assert [e for e in loop_links_up("fo-stp")["node1"] if e.startswith(port)], seen
    assert no_probe_left("fo-stp"), "the killed run's probe stream should outlive it"
    again = labgen("failover", str(stp), "--link", link, "--json", timeout=300)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-2000:]
    fo = json.loads(again.stdout)
    assert [u for u in fo["undone_first"] if u.startswith(f"node1: {port}") and u.endswith("back up")], fo["undone_first"]
    assert [u for u in fo["undone_first"] if "probe stream" in u], fo["undone_first"]
    assert "left by an interrupted failover" in again.stderr
    assert loop_links_up("fo-stp") == {"node1": [], "node2": []}
    assert no_probe_left("fo-stp") == []
    verified(stp)


# ---- tunnels: three nodes, RSTP ------------------------------------------------------------
@pytest.fixture(scope="module")
def rstp3(tmp_path_factory):
    for d, _ in netns_lab(tmp_path_factory, "gre", "fo-tun3", "--nodes", "3", "--stp", "rstp", timeout=300):
        yield d


NODES3 = ("node1", "node2", "node3")


def underlay_tc(lab: str) -> dict[str, str]:
    """Per node, the qdiscs and egress filters on its underlay NIC (eth1 on netns nodes)
    beyond the default: "" when a cut left nothing behind."""
    out = {}
    for node in NODES3:
        qd = node_cmd(lab, node, "tc qdisc show dev eth1").stdout
        flt = node_cmd(lab, node, "tc filter show dev eth1 egress", check=False).stdout
        out[node] = "\n".join(ln for ln in (qd + flt).splitlines() if "clsact" in ln or "bpf" in ln)
    return out


def test_rstp_tunnel_cuts_stop_the_traffic_and_heal(rstp3):
    """Every tunnel of the 3-node mesh cut in the underlay (both nodes drop what they send
    to each other) and restored. A tunnel in the tree stops the probes until the far end's
    BPDUs age out (3 hellos) and an alternate takes over: far longer than a veth cut, and
    proof that the drop really stopped the tunnel's traffic. The blocked tunnel carries
    nothing: nothing takes over. Each restore leaves eth1 as it was found."""
    tunnels = ("node1:gre-node2", "node1:gre-node3", "node2:gre-node3")
    proc = labgen("failover", str(rstp3), *(a for t in tunnels for a in ("--link", t)), "--json",
                  timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    fo = json.loads(proc.stdout)
    assert fo["passed"] is True
    cut = [ln for ln in fo["links"] if ln["cut"]]
    assert sorted(f"{ln['node']}:{ln['link']}" for ln in cut) == sorted(tunnels)
    for ln in cut:
        assert ln["tree_after_cut"] == ln["tree_after_restore"] == "passed", ln
    crossing = [ln for ln in cut if ln["probe"]["crosses"]]
    # Three br1s, three tunnels: two carry traffic, the third closes a loop and blocks.
    assert len(crossing) == 2, cut
    for ln in crossing:
        assert ln["took_over"], ln
        assert ln["lost_on_cut"] > 0 and ln["cut_outage_ms"] > 1000, ln
    assert not [ln for ln in cut if not ln["probe"]["crosses"] and ln["took_over"]]
    assert underlay_tc("fo-tun3") == {n: "" for n in NODES3}
    assert no_probe_left("fo-tun3") == []
    verified(rstp3)


def test_killed_while_a_tunnel_is_cut_the_next_failover_removes_the_drop_first(rstp3):
    """SIGKILL to failover's process group while a tunnel that carries the probes is cut in
    the underlay: the drop stays on both nodes' NICs (the lab's overlay is broken, verify
    fails); the next failover removes exactly it, and the lab verifies again."""
    proc, link, seen = started_until_cut(rstp3, "node1:gre-node2", "node1:gre-node3")
    os.killpg(proc.pid, signal.SIGKILL)    # its group only: what it started on the nodes lives on
    proc.communicate(timeout=60)
    left = underlay_tc("fo-tun3")
    assert sum(1 for v in left.values() if "bpf" in v) == 2, (left, seen[-2000:])
    again = labgen("failover", str(rstp3), "--link", link, "--json", timeout=300)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-2000:]
    fo = json.loads(again.stdout)
    assert len([u for u in fo["undone_first"] if u.endswith("its underlay drop removed")]) == 2, fo["undone_first"]
    assert underlay_tc("fo-tun3") == {n: "" for n in NODES3}
    assert no_probe_left("fo-tun3") == []
    verified(rstp3)
