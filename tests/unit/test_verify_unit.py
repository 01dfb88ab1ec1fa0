"""Unit tests of the verification engine's own logic: output parsing, batching (run through
a real local shell), stage ordering and the report formats."""
from __future__ import annotations

import io
import json
import xml.etree.ElementTree as ET

from rich.console import Console

from labgen import providers
from labgen.lab.model import Options
from labgen.lifecycle import build_lab
from labgen.nodes.runner import LocalRunner, Result, RunnerError
from labgen.report.tables import print_report, summary, to_json, write_junit
from labgen.verify.batch import batch_script, split_batch
from labgen.verify.checks import encap_filter
from labgen.verify.judges import tcpdump_packets
from labgen.verify.results import Check, Report
from labgen.verify.run import verify
from labgen.verify.stages import NAMES


def test_tcpdump_packets_joins_vxlan_inner_lines():
    text = ("listening on eth1, link-type EN10MB\n"
            "12:00:00.000001 IP 10.10.10.1.5 > 10.10.10.2.4789: VXLAN, flags [I] (0x08), vni 7\n"
            "IP 192.168.10.1 > 192.168.10.10: ICMP echo request, id 1, seq 1, length 64\n"
            "12:00:00.200001 IP 10.10.10.1 > 10.10.10.2: GREv0, length 102: IP 192.168.10.1 > "
            "192.168.10.10: ICMP echo request, id 1, seq 2, length 64\n"
            "2 packets captured\n")
    packets = tcpdump_packets(text)
    assert len(packets) == 2
    assert "vni 7" in packets[0] and "ICMP echo request" in packets[0]
    assert packets[1].startswith("IP 10.10.10.1 > 10.10.10.2: GREv0")


def test_encap_filter_points_at_the_inner_header():
    gre = build_lab(Options(tunnel="gre", provider="netns"))
    f = encap_filter(gre, "192.168.10.1", "192.168.10.10")
    # outer IPv4 20 + GRE 4 + inner Ethernet 14 = 38: protocol at 47, ICMP type at 58
    assert f.startswith("ip proto 47 and ip[47] = 1 and ip[58] = 8")
    assert "ip[50:4] = 0xc0a80a01 and ip[54:4] = 0xc0a80a0a" in f
    keyed = encap_filter(build_lab(Options(tunnel="gre", provider="netns", key=5)), "1.2.3.4", "1.2.3.5")
    assert "ip[51] = 1" in keyed
    vx = encap_filter(build_lab(Options(tunnel="vxlan", provider="netns")), "1.2.3.4", "1.2.3.5")
    assert vx.startswith("udp dst port 4789 and ip[59] = 1 and ip[70] = 8")


def test_batch_runs_commands_concurrently_and_keeps_each_result():
    script = batch_script(["echo one; echo err >&2", "exit 3", "sleep 0.5; echo late", "printf 'a\\nb\\n'"])
    res = LocalRunner("local").run(script, timeout=10)
    parts = split_batch(res.stdout, 4)
    assert parts[0][0] == 0 and "one" in parts[0][2] and "err" in parts[0][2]
    assert parts[1][0] == 3
    assert parts[2] == (0, parts[2][1], "late") and parts[2][1] >= 0.4
    assert parts[3][2] == "a\nb"


class DeadRunner:
    node = "node2"

    def run(self, command, timeout=30.0):
        raise RunnerError("node2: cannot connect over SSH to 10.0.0.9:22: connection refused")

    def close(self):
        pass


class AnsweringRunner:
    """Answers the first stage only; at the process boundary, for the engine's ordering."""
    node = "node1"

    def run(self, command, timeout=30.0):
        return Result(command, 0, "@@labgen-check 0 0 12\novsdb-server 0 \"3.1.0\"\n"
                      "ovs-vswitchd 0 ovs-vswitchd (Open vSwitch) 3.1.0\n", "")

    def close(self):
        pass


def test_unreachable_node_fails_its_checks_and_skips_later_stages():
    lab = build_lab(Options(tunnel="gre", provider="netns"))
    report = verify(lab, {"node1": AnsweringRunner(), "node2": DeadRunner()}, providers.get("netns"), timeout=1)
    nodes = [c for c in report.checks if c.stage == "nodes"]
    assert [c.passed for c in nodes] == [True, False]
    assert "connection refused" in nodes[1].evidence
    assert {c.stage for c in report.checks if c.passed is None} == set(NAMES) - {"nodes"}
    assert nodes[1].status == "error"
    assert not report.passed and "first failure: [nodes] Open vSwitch answers (ovsdb-server, ovs-vswitchd) on node2" in summary(report)
    # Read by a person: the nodes stage counts what went wrong, every later stage says it did
    # not run and why, and the node that could not be reached is printed with what it said.
    buf = io.StringIO()
    print_report(report, Console(file=buf, width=100, force_terminal=False, color_system=None))
    text = [ln.rstrip() for ln in buf.getvalue().splitlines()]
    assert text[2] == "nodes     failed   2 nodes, both OVS daemons answer: 1 passed, 1 could not run"
    assert text[3:3 + len(NAMES) - 1] == [f"{n:8}  skipped  not run: stage 'nodes' failed" for n in NAMES[1:]]
    assert text[3 + len(NAMES) - 1:-1] == [
        "nodes node2: Open vSwitch answers (ovsdb-server, ovs-vswitchd): could not run",
        "    node2: cannot connect over SSH to 10.0.0.9:22: connection refused"]


def test_json_and_junit_reports(tmp_path):
    report = Report("gre", "netns", "gre", [
        Check("nodes", "Open vSwitch answers", "node1", "ovs-vsctl ...", True, "3.1.0", 0.1),
        Check("overlay", "A1 -> A2", "node1", "ping", False, "100% packet loss", 1.0),
        Check("tunnel", "tunnel checks", "-", "", None, "not run: stage 'overlay' failed"),
        Check("nodes", "Open vSwitch answers", "node2", "ovs-vsctl ...", False, "node2: cannot connect", 5.0,
              error=True),
    ], seconds=1.2)
    data = json.loads(to_json(report))
    assert data["passed"] is False
    assert [c["status"] for c in data["checks"]] == ["passed", "failed", "skipped", "error"]
    junit = tmp_path / "r.xml"
    write_junit(report, junit)
    suite = ET.parse(junit).getroot().find("testsuite")
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors"), suite.get("skipped")) == \
        ("4", "1", "1", "1")
    assert suite.findall("testcase")[3].find("error").get("message") == "node2: cannot connect"
    failure = suite.findall("testcase")[1].find("failure")
    assert failure.get("message") == "100% packet loss"


def test_batch_runs_one_namespace_entry_for_all_commands_of_that_namespace(tmp_path):
    """Commands given a namespace share one `ip netns exec NS bash -c ...`; each still gets its
    own result, in plan order. (At the process boundary: `ip` here is a stand-in that logs
    its arguments and runs what follows `netns exec NS`; the real one runs in the netns e2e.)"""
    fake = tmp_path / "ip"
    fake.write_text('#!/bin/sh\n[ "$1 $2" = "netns exec" ] || exit 9\necho "$3" >>"$IP_LOG"\nshift 3\nexec "$@"\n')
    fake.chmod(0o755)
    log = tmp_path / "log"
    script = batch_script(["echo a1", "echo plain", "exit 4", "echo b1", "echo a2"],
                          ["A1", None, "A1", "B1", "A1"])
    res = LocalRunner("local").run(f"export PATH={tmp_path}:$PATH IP_LOG={log}; {script}", timeout=10)
    parts = split_batch(res.stdout, 5)
    assert [parts[i][2] for i in (0, 1, 3, 4)] == ["a1", "plain", "b1", "a2"]
    assert parts[2][0] == 4
    entries = log.read_text().splitlines()
    assert sorted(entries) == ["A1", "B1"]      # one entry per namespace
