"""Readable output: every evidence cell one short line, tables within 100 columns, and no
colours or box-drawing characters when stdout is not a terminal (CI logs, `| cat`). The
real CLI on a real lab, in a pipe: tests/e2e/test_readable_cli.py."""
from __future__ import annotations

import io
import json
import re

import pytest
from rich.console import Console
from support import README
from support.cli import ESC, assert_plain

from labgen.report.tables import one_line, print_report, table, to_json
from labgen.verify.results import Check, Report

RAW_IP_ADDR = ("3: eth1@if4: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP group default\n"
               "    link/ether 1a:2b:3c:4d:5e:6f brd ff:ff:ff:ff:ff:ff link-netns labgen-x-underlay\n"
               "    inet 10.10.10.9/24 scope global eth1\n       valid_lft forever preferred_lft forever")


def sample() -> Report:
    r = Report("gre", "netns", "gre", seconds=3.2)
    r.checks = [
        Check("nodes", "Open vSwitch answers", "node1", "ovs-vsctl show", True, "ovs-vswitchd 3.1.0", 0.02),
        Check("stp", "forwarding links form one spanning tree of all 6 bridges", "all", "x", True,
              "root 8000.0aea5969a84d; 5 links forward, the rest block", 0.43),
        Check("tunnel", "GRE (IP protocol 47) carrying A2 -> A1 seen on node1", "node1", "x", True,
              "2 captured: IP 10.10.10.2 > 10.10.10.1: GREv0, length 1480: IP 192.168.10.10 > "
              "192.168.10.1: ICMP echo request, id 22005, seq 1, length 1442\nsecond packet ...", 0.42),
        Check("config", "underlay NIC up, 10.10.10.2/24 assigned", "node2", "ip addr", False,
              RAW_IP_ADDR + " [DF]", 0.1),
        Check("mtu", "A2 -> A1: DF ping, 1435 B payload refused", "node2", "x", None,
              "skipped: an earlier stage failed", 0.0),
    ]
    return r


def render(report: Report, width: int, terminal: bool) -> str:
    buf = io.StringIO()
    console = Console(file=buf, width=width, force_terminal=terminal,
                      color_system="standard" if terminal else None)
    print_report(report, console)
    return buf.getvalue()


def test_one_line():
    assert one_line(RAW_IP_ADDR, 40) == "3: eth1@if4: <BROADCAST,MULTICAST,UP,..."
    assert one_line("\n\n  a   b \n c", 10) == "a b"
    assert len(one_line("x" * 500, 30)) == 30


@pytest.mark.parametrize("width", [80, 100, 140])
def test_plain_table_fits_and_has_no_codes(width):
    text = render(sample(), width, terminal=False)
    assert_plain(text, width)
    # One line per evidence cell: the raw ip addr dump shows as its first line only.
    assert "valid_lft" not in text.split("config node2:")[0]
    assert text.rstrip().splitlines()[-1].startswith("NOT VERIFIED: 3 passed, 1 failed, 1 skipped")


def test_failed_check_shows_what_it_saw_below_the_table():
    text = render(sample(), 100, terminal=False)
    below = text.split("config node2: underlay NIC up, 10.10.10.2/24 assigned: failed\n")[1]
    assert below.splitlines()[:2] == ["    3: eth1@if4: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP group default",
                                      "    link/ether 1a:2b:3c:4d:5e:6f brd ff:ff:ff:ff:ff:ff link-netns labgen-x-underlay"]
    assert "[DF]" in below     # printed as text, not eaten as markup


def test_terminal_table_fits_too():
    text = render(sample(), 100, terminal=True)
    assert ESC in text     # colours in a terminal
    plain = re.sub(r"\x1b\[[0-9;]*m", "", text)
    assert max(len(ln) for ln in plain.splitlines()) <= 100


def test_json_keeps_the_full_evidence():
    data = json.loads(to_json(sample()))
    assert data["checks"][3]["evidence"].startswith(RAW_IP_ADDR)
    assert table(sample()).row_count == 5


def test_readme_documents_every_exit_code_in_one_table():
    readme = README.read_text()
    assert readme.count("## Exit codes") == 1 and readme.count("| code | meaning |") == 1
    section = readme.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    codes = re.findall(r"^\| (\S+) \|", section, re.M)
    assert codes[:7] == ["code", "0", "1", "2", "3", "4", "130"], codes
    assert "`exec`" in section and "`capture`" in section and "`status`" in section
