"""Readable output: every evidence cell one short line, tables within 100 columns, and no
colours or box-drawing characters when stdout is not a terminal (CI logs, `| cat`)."""
from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys

import pytest
from netns_helpers import labgen
from rich.console import Console

from labgen.report import one_line, print_report, table, to_json
from labgen.results import Check, Report

ESC = "\x1b"
BOX_DRAWING = re.compile("[\u2500-\u257f]")
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


def assert_plain(text: str, width: int = 100) -> None:
    assert ESC not in text, "colour or cursor codes in non-terminal output"
    assert not BOX_DRAWING.search(text), "box-drawing characters in non-terminal output"
    assert text.isascii(), [ch for ch in text if not ch.isascii()][:5]
    too_wide = [ln for ln in text.splitlines() if len(ln) > width]
    assert not too_wide, too_wide


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


# ---- the real CLI on a real lab -------------------------------------------------------------
@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    lab_dir = tmp_path_factory.mktemp("readable") / "lab"
    proc = labgen("create", "gre", "--provider", "netns", "--name", f"rd{os.getpid() % 100000}",
                  "--dir", str(lab_dir))
    try:
        assert proc.returncode == 0, proc.stderr + proc.stdout
        yield lab_dir
    finally:
        labgen("destroy", str(lab_dir))


def cli(*args: str, columns: str | None = "100") -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "FORCE_COLOR", "TERM")}
    if columns:
        env["COLUMNS"] = columns
    return subprocess.run([sys.executable, "-m", "labgen", *args], capture_output=True, text=True,
                          timeout=240, env=env)


@pytest.mark.netns
@pytest.mark.parametrize("columns", ["100", None])
def test_verify_and_status_in_a_pipe(lab, columns):
    proc = cli("verify", str(lab), columns=columns)
    assert proc.returncode == 0, proc.stderr
    assert_plain(proc.stdout)
    rows = [ln for ln in proc.stdout.splitlines() if re.match(r"^(nodes|config|underlay|stp|overlay|tunnel|mtu) ", ln)]
    assert len(rows) >= 30 and all(" passed " in ln for ln in rows)
    assert proc.stdout.rstrip().splitlines()[-1].startswith("VERIFIED: ")
    st = cli("status", str(lab), columns=columns)
    assert st.returncode == 0, st.stderr
    assert_plain(st.stdout)
    assert re.search(r"^node1 +running +\S+ +gre-node2 +converged", st.stdout, re.M), st.stdout


@pytest.mark.netns
def test_verify_piped_through_cat(lab):
    """The README's claim, literally: `labgen verify DIR | cat` has no ESC and no box drawing."""
    proc = subprocess.run(f"{sys.executable} -m labgen verify {lab} | cat", shell=True,
                          capture_output=True, text=True, timeout=240)
    assert "VERIFIED: " in proc.stdout
    assert_plain(proc.stdout)
    assert ESC not in proc.stderr


@pytest.mark.netns
def test_exit_codes_of_status(lab, tmp_path):
    """0 when every node runs, 3 when not (here: a lab that was rendered but never brought up)."""
    assert cli("status", str(lab)).returncode == 0
    other = tmp_path / "other"
    assert labgen("render", "gre", "--provider", "netns", "--name", "rdnone", "--dir", str(other)).returncode == 0
    proc = cli("status", str(other))
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert_plain(proc.stdout)
    assert re.search(r"^node1 +absent", proc.stdout, re.M)


def test_readme_documents_every_exit_code_in_one_table():
    from pathlib import Path
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert readme.count("## Exit codes") == 1 and readme.count("| code | meaning |") == 1
    section = readme.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    codes = re.findall(r"^\| (\S+) \|", section, re.M)
    assert codes[:7] == ["code", "0", "1", "2", "3", "4", "130"], codes
    assert "`exec`" in section and "`capture`" in section and "`status`" in section
